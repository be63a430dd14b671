"""The dataset tasks this program trains: the row fields it reads from a channel, the metrics it reports
on the test split (`test_<name>`; `evaluation.py` computes them) and the family (classification: a
sequence-classification head; generation: a causal LM).

This program is separate from fastuner and keeps its own copy of fastuner's task table
(fastuner/config/tasks.py); tests/core/test_tasks.py pins the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskDefinition:
    family: str  # "classification" | "generation"
    row_fields: tuple[str, str]
    metrics: tuple[str, ...]

    @property
    def is_causal_lm(self) -> bool:
        return self.family == "generation"


_CLASSIFY = TaskDefinition("classification", ("input", "label"), ("accuracy", "macro_f1"))
_GENERATE = TaskDefinition("generation", ("input", "target"), ("exact_match",))

TASKS: dict[str, TaskDefinition] = {"classification": _CLASSIFY, "text_generation": _GENERATE, "qa": _GENERATE}
