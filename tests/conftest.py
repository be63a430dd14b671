"""Fixtures shared by every test folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fastuner.cli.main import main

# Seconds each long test took on 2 busy CPU cores under `pytest -n 2`. xdist hands tests out in
# collection order, so these go first, longest first: the short tests then fill the gaps instead of
# one worker finishing a long test alone at the end. A test missing here still runs, scheduled as quick.
DURATIONS = {
    "tests/aws/test_e2e_deployments.py::test_a_deployment_planned_applied_changed_in_place_and_destroyed": 90,
    "tests/aws/test_e2e_deployments.py::test_reap_from_tags_with_no_state_finds_the_expired_deployment_and_deletes_its_tree": 40,
    "tests/providers/test_adapter_cache.py::test_reverting_restores_the_earlier_run_and_the_oldest_is_evicted": 68,
    "tests/invoke/test_end_to_end.py::test_apply_invoke_batch_evaluate_destroy": 55,
    "tests/providers/test_sagemaker_toolkit.py::test_the_run_folder_runs_unchanged_under_the_sagemaker_training_toolkit": 51,
    "tests/providers/test_local_deployments.py::test_lifecycle_update_in_place_drift_and_destroy": 48,
    "tests/providers/test_local_adapters.py::test_trains_classification_and_generation_adapters": 48,
    "tests/providers/test_local_deployments.py::test_ttl_expiry_reap_and_renew": 46,
    "tests/providers/test_local_adapters.py::test_no_wait_then_adopt_and_resume_after_a_kill": 46,
    "tests/providers/test_local_adapters.py::test_failures_are_explained_and_isolated": 35,
    "tests/providers/test_local_deployments.py::test_port_in_use_and_corrupt_adapter_are_explained": 32,
    "tests/train/test_resume.py::test_sigterm_saves_a_checkpoint_and_the_rerun_resumes": 31,
    "tests/train/test_distributed.py::test_two_processes_agree_and_rank0_saves_their_adapter": 24,
    "tests/providers/test_local_adapters.py::test_interrupted_apply_leaves_training_running": 24,
    "tests/providers/test_training_output.py::test_apply_output_and_training_log_without_a_terminal": 22,
    "tests/serve/test_lifecycle.py::test_sagemaker_serve_mode_and_sigterm_finishes_in_flight_requests": 22,
    "tests/train/test_train_process.py::test_text_generation_job": 19,
    "tests/train/test_faults.py::test_hub_id_in_offline_mode_fails_fast": 14,
    "tests/state/test_s3_processes.py::test_a_second_apply_fails_naming_the_holder_or_waits_for_it": 10,
    "tests/state/test_s3_processes.py::test_the_lock_of_a_killed_holder_is_taken_over_when_its_lease_ends": 6,
    "tests/aws/test_e2e_server.py::test_the_aws_quickstart_cycle_and_the_policy_that_covers_it": 20,
    "tests/aws/test_e2e_server.py::test_a_killed_apply_is_adopted_by_the_next_one_which_creates_the_job_once": 16,
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first (DURATIONS); the sort is stable, so everything else keeps its collection order."""
    items.sort(key=lambda item: -DURATIONS.get(item.nodeid.split("[")[0], 0))


@dataclass
class Run:
    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


class Clock:
    """The current time as a test moves it: handed to the CLI (`cli(..., clock=clock)`) instead of waiting."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def tick(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    """Starts at the real time, so that what real processes record (start times, last invocations) fits."""
    return Clock(datetime.now(UTC))


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `fastuner ARGS` in-process in a folder; returns exit code and captured output.

    `clock` (optional) is the current time the command sees; `environ` (optional) the environment it
    reads instead of the process's (FASTUNER_WORKSPACE, FASTUNER_VAR_*, the programs' environment)."""

    def run(*args: str, cwd: Path | None = None, clock: Clock | None = None,
            environ: dict[str, str] | None = None) -> Run:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setenv("COLUMNS", "200")
        code = main(list(args), clock=clock, environ=environ)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
