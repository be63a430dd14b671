"""The secrets category in small (tests/stress/secrets.py): canaries grepped in plan renderings, and
one SageMaker cycle on moto. `python -m tests.stress secrets` adds the local train-and-serve cycle."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from tests.stress import Report, secrets


def test_plan_renderings_hold_no_canary(tmp_path: Path) -> None:
    [report] = secrets.run(3, 4000, tmp_path, log=lambda _: None, local=0, sagemaker=0)
    assert report.ok and report.trials == 3, report.failures
    assert report.cases >= 3 * 7


def test_a_plainly_declared_variable_is_found(tmp_path: Path) -> None:
    """The check is not vacuous: the same trial with `sensitive: false` reports the value everywhere."""
    problem = secrets.plan_trial(random.Random(4000), tmp_path, Report("x"), sensitive=False)
    assert problem is not None and "sensitive in the output of `fastuner" in problem


def test_canary_forms_and_listening_addresses() -> None:
    planted = {"a": 'x"y\\z', "b": "plain-value"}
    assert secrets.find_canaries('{"k": "x\\"y\\\\z"}', planted) == ["a"]  # as JSON writes it
    assert secrets.find_canaries("plain-value", planted, allow=frozenset({"b"})) == []
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert secrets.listening_addresses(s.getsockname()[1]) == ["127.0.0.1"]


@pytest.mark.slow  # a moto server and the CLI as a subprocess: bootstrap, apply, logs, destroy (about 40 s)
def test_the_sagemaker_cycle_sends_and_stores_no_canary(tmp_path: Path) -> None:
    from tests.stress.smsecrets import sagemaker_scenario

    report = sagemaker_scenario(1, 5000, tmp_path, lambda _: None, short=True)
    assert report.ok and report.trials == 1, report.failures
