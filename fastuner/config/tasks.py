"""Dataset tasks, each defined once: its row fields, its metrics and what a server does with it.

Everything in fastuner/ that depends on a dataset's task reads its `TaskDefinition` (the dataset rules,
the split's strata, `invoke --evaluate`, the training summary, the spec check that a deployment serves
one family) instead of comparing task names. The two container programs (containers/train,
containers/serve) are separate programs with their own copy of this table; tests/core/test_tasks.py
pins both copies equal to this one.

This module imports nothing but the standard library: the dataset scan's worker processes need only
what `fastuner.data.scan.limits_for` derives from it, and the pure core reads it freely.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fastuner.errors import DiagnosticsError


class Family(StrEnum):
    """What a served model does with a task's rows: pick a label, or generate text."""

    CLASSIFICATION = "classification"
    GENERATION = "generation"


@dataclass(frozen=True)
class TaskDefinition:
    """One task. `target_field` is the row field beside `input`; for the classification family it is a
    class label (an integer is accepted and becomes its decimal string, it has no length limit, and the
    split is stratified by it). `metrics` are what the training program and `invoke --evaluate` measure
    on the test split (stored as `test_<name>` and `base_test_<name>`). `answer_field` is the field of
    a server's answer that is scored; `base_model_answers` says whether the base model can answer at
    all (a classification base has no trained head, so its untrained-head score comes from training)."""

    family: Family
    target_field: str
    metrics: tuple[str, ...]
    answer_field: str
    base_model_answers: bool

    @property
    def row_fields(self) -> tuple[str, str]:
        return ("input", self.target_field)

    @property
    def classifies(self) -> bool:
        return self.family is Family.CLASSIFICATION


_CLASSIFY = TaskDefinition(Family.CLASSIFICATION, "label", ("accuracy", "macro_f1"), "label", False)
_GENERATE = TaskDefinition(Family.GENERATION, "target", ("exact_match",), "generated_text", True)


class Task(StrEnum):
    CLASSIFICATION = "classification"
    TEXT_GENERATION = "text_generation"
    QA = "qa"

    @property
    def definition(self) -> TaskDefinition:
        return DEFINITIONS[self]

    @property
    def family(self) -> Family:
        return DEFINITIONS[self].family


DEFINITIONS: dict[Task, TaskDefinition] = {
    Task.CLASSIFICATION: _CLASSIFY,
    Task.TEXT_GENERATION: _GENERATE,
    Task.QA: _GENERATE,
}


def parse_task(name: str) -> Task:
    """A task by name; a user error naming the choices for an unknown one."""
    try:
        return Task(name)
    except ValueError:
        raise DiagnosticsError.single(
            f"unknown dataset task {name!r}", f"task must be one of: {', '.join(Task)}"
        ) from None


def describe_tasks() -> str:
    """The tasks grouped by their row fields, for the spec's JSON Schema: `classification (input, label) |
    text_generation or qa (input, target)`."""
    groups: dict[tuple[str, str], list[str]] = {}
    for task, definition in DEFINITIONS.items():
        groups.setdefault(definition.row_fields, []).append(task.value)
    return " | ".join(f"{' or '.join(names)} ({', '.join(fields)})" for fields, names in groups.items())
