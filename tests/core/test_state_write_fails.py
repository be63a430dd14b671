"""A state write that fails during apply (S3 throttling or 500s that outlasted the retries, a full disk)
stops the run with that error, never a bug report with a traceback, whichever write it was (marking an
operation pending, recording its result or its failure): nothing new starts, running work stops
waiting, and `apply_plan` raises the error (found by tests/stress/faults.py, where a 20 % share of
failing AWS calls made a failure's record fail, and the retried record was reported as a bug)."""

from __future__ import annotations

import time
from collections.abc import Container
from pathlib import Path

import pytest

from fastuner.engine.events import NullReporter
from fastuner.errors import UserError
from fastuner.plan.status import ResultStatus
from fastuner.state.local import LocalStateStore
from fastuner.state.model import State
from tests.core.conftest import Harness


class FailingStore(LocalStateStore):
    """A local store whose writes number `fail_at` (counting from 1) fail, as S3's do when it keeps
    refusing past the retries, and maybe answers again for the next."""

    def __init__(self, path: Path, fail_at: Container[int]) -> None:
        super().__init__(path)
        self.fail_at = fail_at
        self.attempts = 0

    def write(self, state: State) -> State:
        self.attempts += 1
        if self.attempts in self.fail_at:
            raise UserError("writing the state s3://bucket/key: AWS kept throttling PutObject after the retries",
                            "Nothing is lost: run again in a minute.")
        return super().write(state)


class Seen(NullReporter):
    def __init__(self) -> None:
        self.finished_: dict[str, tuple[ResultStatus, str]] = {}

    def finished(self, change, result) -> None:
        self.finished_[result.address] = (result.status, result.message)


def apply_failing(harness: Harness, **kw) -> Seen:
    seen = Seen()
    with pytest.raises(UserError, match="kept throttling PutObject"):
        harness.apply(harness.plan(), reporter=seen, **kw)
    return seen


def test_a_failed_write_while_an_operation_starts_fails_the_run_clearly(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.load()
    harness.store = FailingStore(tmp_path / "state" / "demo.json", fail_at=range(3, 99))  # dataset pending, done; adapter
    got = apply_failing(harness, parallelism=1).finished_
    assert got["dataset.ds"][0] is ResultStatus.DONE
    assert got["adapter.ad"][0] is ResultStatus.FAILED and got["adapter.ad"][1].startswith("not recorded in state:")
    assert got["deployment.ep"][0] is ResultStatus.SKIPPED
    assert "adapter.ad" not in harness.ops()  # never started: it could not be marked pending
    assert harness.store.current_lock() is None


def test_a_failed_write_of_a_failure_is_not_a_bug(tmp_path: Path) -> None:
    harness = Harness(tmp_path)
    harness.load()
    harness.world.script("dataset.ds").fail_create = "the dataset is broken"
    harness.store = FailingStore(tmp_path / "state" / "demo.json", fail_at={2})  # pending; its failure not; then again
    got = apply_failing(harness, parallelism=1).finished_
    assert got["dataset.ds"][0] is ResultStatus.FAILED and "not recorded in state" in got["dataset.ds"][1]


def test_running_work_stops_waiting_when_another_cannot_be_recorded(tmp_path: Path) -> None:
    text = """\
version: 1
project: demo
datasets:
  a: {path: data/a.jsonl, task: text_generation}
  b: {path: data/b.jsonl, task: text_generation}
"""
    harness = Harness(tmp_path)
    harness.write_data("a", '{"input": "x", "output": "y"}\n')
    harness.write_data("b", '{"input": "x", "output": "y"}\n')
    harness.load(text)
    harness.world.script("dataset.a").delay = 60.0  # a long operation
    harness.world.script("dataset.b").delay = 0.2
    harness.store = FailingStore(tmp_path / "state" / "demo.json", fail_at=range(3, 99))  # both pending; b's result not
    started = time.monotonic()
    got = apply_failing(harness, parallelism=2).finished_
    assert time.monotonic() - started < 15  # not dataset.a's 60 s
    assert got["dataset.b"][0] is ResultStatus.FAILED
    assert got["dataset.a"][0] is ResultStatus.FAILED  # stopped, and its pending result not recorded either
