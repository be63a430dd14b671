"""The races category, small: applies started together on a local state and on S3 (a moto server),
processes hammering the local lock, a killed and a stalled S3 lock holder. The full run adds the reap
during an apply (a real server and a ttl to wait out: tests/cli/test_stale_after_waiting.py covers its
fix in the suite) and the S3 hammer: `python -m tests.stress races --trials 100 --summary`."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tests.stress import races
from tests.stress.kit import Moto

pytestmark = pytest.mark.slow


def test_applies_started_together_on_a_local_state(tmp_path: Path) -> None:
    report = races.run_local_lock(1, 11, tmp_path, log=print)
    assert report.ok and report.trials == 1, report.failures


def test_processes_hammering_the_local_lock(tmp_path: Path) -> None:
    report = races.run_hammer(1, 4, tmp_path, log=print)
    assert report.ok and report.trials == 1, report.failures


def test_s3_races_and_killed_and_stalled_holders(tmp_path: Path) -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = Moto()
    try:
        reports = races.run_s3(moto, 1, 5, tmp_path, log=print, reap_trials=0)
    finally:
        moto.close()
    assert [r.scenario for r in reports] == ["races/s3 lock", "races/s3 killed holder", "races/s3 stalled holder",
                                             "races/reap during apply"]
    for r in reports[:3]:
        assert r.ok and r.trials == 1, (r.scenario, r.failures)
