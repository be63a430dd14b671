"""The races category, small: applies started together on a local state and on S3 (a moto server), a
killed and a stalled lock holder, reap while an apply runs. The full run is
`python -m tests.stress races --trials 100 --summary`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stress import races

pytestmark = pytest.mark.slow


def test_applies_started_together_on_a_local_state(tmp_path: Path) -> None:
    report = races.run_local_lock(2, 11, tmp_path, log=print)
    assert report.ok and report.trials == 2, report.failures


def test_s3_lock_races_killed_and_stalled_holders_and_reap(tmp_path: Path) -> None:
    reports = races.run(1, 5, tmp_path, log=print)
    for r in reports:
        assert r.ok and r.trials == 1, (r.scenario, r.failures)
