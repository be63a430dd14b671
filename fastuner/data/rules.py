"""What a dataset scan checks and how it splits: `Task`, `SplitSpec`, `Rules`.

These are plain frozen values (the lead's pydantic config maps onto them). Everything in them is part
of a dataset's `version`: change a limit or the seed and the dataset gets a new version. Invalid
values are user errors (`DiagnosticsError`), raised when the value is built.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from fractions import Fraction

from fastuner.errors import DiagnosticsError

TASKS = ("classification", "text_generation", "qa")
SPLITS = ("train", "validation", "test")

# Bump when the normalised form of a record (and so its bytes in a split file and its digest) changes.
NORMALISATION_VERSION = 1

# Largest fraction-sum error accepted from float input (0.7 + 0.2 + 0.1 is 0.9999999999999999).
_SUM_TOLERANCE = Fraction(1, 10**9)


def second_field(task: str) -> str:
    """The field beside `input` that a task's records carry: `label` or `target`."""
    check_task(task)
    return "label" if task == "classification" else "target"


def check_task(task: str) -> None:
    if task not in TASKS:
        raise DiagnosticsError.single(
            f"unknown dataset task {task!r}",
            f"task must be one of: {', '.join(TASKS)}",
        )


@dataclass(frozen=True)
class SplitSpec:
    """Fractions of the distinct records that go to each split, and the seed that picks them.

    `train` must be positive; `validation` and `test` may be 0 (that split is then empty). The three
    must add up to 1; `train` takes every record not picked for validation or test, so float noise
    in the fractions never loses or duplicates a record.
    """

    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 42

    def __post_init__(self) -> None:
        problems = []
        for name in SPLITS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                problems.append(f"split.{name} must be a number, got {value!r}")
            elif not 0 <= value <= 1:
                problems.append(f"split.{name} must be between 0 and 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            problems.append(f"split.seed must be a non-negative integer, got {self.seed!r}")
        if not problems:
            if self.train == 0:
                problems.append("split.train must be greater than 0")
            total = sum(_exact(getattr(self, name)) for name in SPLITS)
            if abs(total - 1) > _SUM_TOLERANCE:
                problems.append(
                    f"split fractions must add up to 1, got {self.train} + {self.validation} + "
                    f"{self.test} = {float(total):g}"
                )
        if problems:
            raise DiagnosticsError.single(problems[0], "; ".join(problems[1:]))

    def fractions(self) -> tuple[Fraction, Fraction, Fraction]:
        """Exact (train, validation, test) fractions from the decimal values as written."""
        validation, test = _exact(self.validation), _exact(self.test)
        return 1 - validation - test, validation, test

    def to_dict(self) -> dict:
        return {"train": float(self.train), "validation": float(self.validation), "test": float(self.test),
                "seed": self.seed}


@dataclass(frozen=True)
class Rules:
    """Validation limits. Lengths are Unicode code points of the normalised text."""

    min_rows: int = 100
    max_input_chars: int = 8192
    max_target_chars: int = 2048

    def __post_init__(self) -> None:
        for name in ("min_rows", "max_input_chars", "max_target_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DiagnosticsError.single(f"{name} must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        return {"min_rows": self.min_rows, "max_input_chars": self.max_input_chars,
                "max_target_chars": self.max_target_chars}


def text_length(text: str) -> int:
    """The length the row rules check against `max_input_chars`: code points after NFC normalisation and
    stripping (0: empty or only whitespace). `rows.py` computes the same inline, row by row."""
    return len((text if text.isascii() else unicodedata.normalize("NFC", text)).strip())


def _exact(value: float) -> Fraction:
    # repr() is the shortest decimal that round-trips, so 0.1 becomes exactly 1/10.
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
