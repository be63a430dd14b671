"""How a run ended, as the CLI's exit code and the views' verdict both read it."""

from __future__ import annotations

from fastuner.engine.apply import ApplyResult
from fastuner.engine.events import Result
from fastuner.plan.status import ApplyOutcome, ResultStatus


def outcome(*statuses: ResultStatus, cancelled: bool = False, bug: bool = False) -> ApplyOutcome:
    results = [Result(f"dataset.d{i}", "create", s) for i, s in enumerate(statuses)]
    bugs = [("dataset.x", RuntimeError(), "Traceback")] if bug else []
    return ApplyResult(results=results, bugs=bugs, cancelled=cancelled).outcome


def test_work_left_running_is_complete() -> None:
    assert outcome(ResultStatus.DONE, ResultStatus.PENDING, ResultStatus.DEFERRED) is ApplyOutcome.COMPLETE
    assert outcome() is ApplyOutcome.COMPLETE


def test_a_failure_a_skip_or_a_bug_fails_even_when_interrupted() -> None:
    for statuses, bug in (((ResultStatus.FAILED,), False), ((ResultStatus.SKIPPED,), False), ((), True)):
        assert outcome(*statuses, ResultStatus.CANCELLED, cancelled=True, bug=bug) is ApplyOutcome.FAILED


def test_an_interrupt_or_unstarted_work_is_interrupted() -> None:
    assert outcome(ResultStatus.DONE, cancelled=True) is ApplyOutcome.INTERRUPTED
    assert outcome(ResultStatus.CANCELLED) is ApplyOutcome.INTERRUPTED
