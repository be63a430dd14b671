"""What a resource's recorded outputs say to a person, one function per kind: the line apply ends with
and the summary column of `fastuner show`.

State holds data (counts, metrics, durations, URLs) and these functions word it, so the wording can
change without touching stored states and every provider gets the same words for the same data. A
`summary` key that older versions stored in outputs is never read: its text may be stale.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastuner.config.duration import format_elapsed
from fastuner.config.tasks import Task


def describe_outputs(kind: str, outputs: Mapping[str, Any] | None) -> str:
    """One line about a resource of `kind`, or "" when its outputs hold nothing to tell (a resource
    still pending, a kind with no words)."""
    describe = DESCRIBE.get(kind)
    return describe(outputs or {}) if describe else ""


def describe_dataset(outputs: Mapping[str, Any]) -> str:
    """"1204 rows, 24 duplicates dropped; train 944 / validation 118 / test 118; 12 labels"."""
    counts, splits = outputs.get("counts"), outputs.get("splits")
    if not counts or not splits:
        return ""
    return describe_figures(counts, {name: split["rows"] for name, split in splits.items()}, outputs.get("labels"))


def describe_figures(counts: Mapping[str, int], split_rows: Mapping[str, int], labels: Mapping[str, int] | None) -> str:
    """A dataset's figures in words, from a stored version's outputs or from a scan (`fastuner validate`)."""
    head = f"{counts['records']} rows"
    if counts["duplicates"]:
        head += f", {counts['duplicates']} duplicate{'s' if counts['duplicates'] != 1 else ''} dropped"
    parts = [head, " / ".join(f"{name} {rows}" for name, rows in split_rows.items())]
    if labels:
        parts.append(f"{len(labels)} labels")
    return "; ".join(parts)


def describe_adapter(outputs: Mapping[str, Any]) -> str:
    """The test metrics the task measures (accuracy next to the base model's, or exact match and
    loss), then steps and training time; a run rebuilt from the store says so first."""
    if "duration_s" not in outputs:
        return ""
    metrics = outputs.get("metrics") or {}
    took = format_elapsed(float(outputs["duration_s"] or 0.0))
    steps = metrics.get("steps")
    head = f"{steps} steps in {took}" if steps is not None else f"trained in {took}"
    text = _test_metrics(outputs.get("task"), metrics, head)
    return f"restored from a previous run; {text}" if outputs.get("restored_from") else text


def _test_metrics(task: str | None, metrics: Mapping[str, Any], head: str) -> str:
    if task is not None and Task(task).definition.classifies and "test_accuracy" in metrics:
        base = metrics.get("base_test_accuracy")
        base_text = f" (base model, untrained head: {base:.1%})" if isinstance(base, int | float) else ""
        return f"test accuracy {metrics['test_accuracy']:.1%}{base_text}; {head}"
    if "test_exact_match" in metrics:
        return f"test exact match {metrics['test_exact_match']:.1%}, test loss {metrics.get('test_loss', float('nan')):.3f}; {head}"
    if "test_loss" in metrics:
        return f"test loss {metrics['test_loss']:.3f}; {head}"
    return head


def describe_deployment(outputs: Mapping[str, Any]) -> str:
    """"serving 2 adapter(s) at http://127.0.0.1:8080"."""
    if not outputs.get("url"):
        return ""
    return f"serving {len(outputs.get('adapters') or {})} adapter(s) at {outputs['url']}"


DESCRIBE: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "dataset": describe_dataset,
    "adapter": describe_adapter,
    "deployment": describe_deployment,
}
