"""What apply and destroy say when they end, and each kind's line, worded from plain data (no engine,
no state): the exact texts users read, so a change of words shows up here."""

from __future__ import annotations

import io

from rich.console import Console

from fastuner.config.kinds import KINDS
from fastuner.plan.status import ApplyOutcome, ResultStatus
from fastuner.views.apply import render_apply_report
from fastuner.views.resources import DESCRIBE, describe_outputs

DATASET = {"counts": {"records": 1204, "duplicates": 1}, "labels": {"a": 3, "b": 4},
           "splits": {"train": {"rows": 944}, "validation": {"rows": 118}, "test": {"rows": 118}}}
ADAPTER = {"task": "classification", "duration_s": 167.4, "restored_from": None,
           "metrics": {"steps": 40, "test_accuracy": 0.9375, "base_test_accuracy": 0.25}}


def text(report: dict) -> str:
    console = Console(file=io.StringIO(), width=200, highlight=False, soft_wrap=True, no_color=True)
    render_apply_report({"operation": "apply", "bugs": [], "resources": [], **report}, console)
    return console.file.getvalue()


def result(address: str, status: ResultStatus, action: str = "create", message: str = "", deposed=None) -> dict:
    return {"address": address, "action": action, "status": status, "message": message, "deposed": deposed}


def test_every_kind_has_words() -> None:
    assert set(DESCRIBE) == set(KINDS)


def test_each_kind_is_worded_from_its_data() -> None:
    assert describe_outputs("dataset", DATASET) == \
        "1204 rows, 1 duplicate dropped; train 944 / validation 118 / test 118; 2 labels"
    assert describe_outputs("adapter", ADAPTER) == \
        "test accuracy 93.8% (base model, untrained head: 25.0%); 40 steps in 2m47s"
    assert describe_outputs("adapter", {**ADAPTER, "restored_from": "run-1", "task": "qa",
                                         "metrics": {"test_exact_match": 0.5, "test_loss": 1.25}}) == \
        "restored from a previous run; test exact match 50.0%, test loss 1.250; trained in 2m47s"
    assert describe_outputs("deployment", {"url": "http://127.0.0.1:8080", "adapters": {"a": "p"}}) == \
        "serving 1 adapter(s) at http://127.0.0.1:8080"


def test_outputs_without_the_data_and_a_stored_summary_say_nothing() -> None:
    """A pending run's outputs, or a `summary` an older version stored: nothing (stale text is never shown)."""
    assert describe_outputs("adapter", {"run": "r", "summary": "old words"}) == ""
    assert describe_outputs("deployment", {"pid": 1, "log": "serve.log"}) == ""
    assert describe_outputs("dataset", {}) == describe_outputs("thing", DATASET) == ""


def test_complete_counts_what_was_done_and_words_each_resource() -> None:
    out = text({"outcome": ApplyOutcome.COMPLETE, "results": [
        result("dataset.d", ResultStatus.DONE), result("adapter.a", ResultStatus.DONE, "replace"),
        result("adapter.a", ResultStatus.DONE, "delete", deposed="old-run"),
        result("adapter.b", ResultStatus.PENDING, message="training"),
        result("deployment.api", ResultStatus.DEFERRED)],
        "resources": [{"address": "dataset.d", "kind": "dataset", "outputs": DATASET},
                      {"address": "adapter.a", "kind": "adapter", "outputs": ADAPTER}]})
    assert out == (
        "\nApply complete! Resources: 1 created, 0 updated, 1 replaced, 0 destroyed.\n"
        "1 still running: adapter.b. Run `fastuner apply` later to pick up their results and carry out what "
        "waits on them (deployment.api).\n"
        "  dataset.d: 1204 rows, 1 duplicate dropped; train 944 / validation 118 / test 118; 2 labels\n"
        "  adapter.a: test accuracy 93.8% (base model, untrained head: 25.0%); 40 steps in 2m47s\n")


def test_failed_lists_failures_and_skips_after_any_bug() -> None:
    out = text({"outcome": ApplyOutcome.FAILED, "operation": "destroy",
                "bugs": [{"address": "adapter.a", "traceback": "Traceback [x]"}],
                "results": [result("adapter.a", ResultStatus.FAILED, "delete", "boom [1]"),
                            result("dataset.d", ResultStatus.SKIPPED, "delete", "still in use")]})
    assert out == (
        "Bug while applying adapter.a — please report it:\nTraceback [x]\n"
        "\nDestroy failed. Resources: 0 destroyed; 1 failed, 1 skipped.\n"
        "  ✗ adapter.a: boom [1]\n  - dataset.d: still in use\n"
        "Fix the cause and run `fastuner destroy` again: completed work is kept in state.\n")


def test_interrupted_says_how_many_did_not_start() -> None:
    out = text({"outcome": ApplyOutcome.INTERRUPTED, "results": [
        result("dataset.d", ResultStatus.DONE), result("adapter.a", ResultStatus.CANCELLED)]})
    assert out == ("\nApply interrupted. Resources: 1 created, 0 updated, 0 replaced, 0 destroyed; 1 not started. "
                   "State is saved; run `fastuner apply` to continue.\n")
