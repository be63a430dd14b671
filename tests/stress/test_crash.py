"""The crash category, small: one SageMaker-over-moto trial (apply and destroy each SIGKILLed at a seeded
moment, then checked and converged) and one local trial with real training and serving. The full run is
`python -m tests.stress crash --trials 100 --summary`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stress import crash

pytestmark = pytest.mark.slow


def test_killed_sagemaker_apply_and_destroy_converge(tmp_path: Path) -> None:
    # measured durations are replaced by typical ones, so the test skips the calibration run
    reports = crash.run_sagemaker(1, 7, tmp_path, log=print, durations=(7.0, 3.0))
    assert [r.scenario for r in reports] == ["crash/sagemaker apply", "crash/sagemaker destroy"]
    for r in reports:
        assert r.ok and r.trials == 1, r.failures


def test_killed_local_apply_and_destroy_leave_nothing_behind(tmp_path: Path) -> None:
    reports = crash.run_local(1, 3, tmp_path, log=print, durations=(25.0, 4.0))
    for r in reports:
        assert r.ok and r.trials == 1, r.failures
