"""The reliability harness: crashes, races, faults, fuzzing and secrets (issue 12).

One command runs it all, or one category: `python -m tests.stress [CATEGORY …] [--trials N] [--seed S]
[--summary]` (`bench/stress.py` is the same command). The normal suite runs a small version of each
category (`tests/stress/test_*.py`).

A category is a module of this package listed in `CATEGORIES`, with

    def run(trials: int, seed: int, workdir: Path, *, log: Callable[[str], None]) -> list[Report]

Each trial draws its randomness from `random.Random(seed + i)` so a failure names the seed that replays
it. A category returns one `Report` per scenario (e.g. "crash/local apply", "crash/sagemaker apply").
`DEFECTS` in a module lists the defects the category found and that were fixed (one sentence each, with
the commit's subject), so the summary can count them.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    """What one scenario of a category ran and found."""

    scenario: str  # "crash/local apply"
    trials: int = 0
    passed: int = 0
    faults: int = 0  # faults injected (kills, AWS errors, OSErrors …)
    cases: int = 0  # fuzzed inputs, where the scenario fuzzes
    failures: list[str] = field(default_factory=list)  # "seed 1234: what went wrong"

    @property
    def ok(self) -> bool:
        return not self.failures and self.passed == self.trials

    def trial(self, seed: int, problem: str | None) -> None:
        """Count one trial; `problem` is None when every check held."""
        self.trials += 1
        if problem is None:
            self.passed += 1
        else:
            self.failures.append(f"seed {seed}: {problem}")


# category name -> module (tests.stress.<module>)
CATEGORIES: dict[str, str] = {
    "crash": "crash",
    "races": "races",
    "faults": "faults",
    "fuzz": "fuzz",
    "secrets": "secrets",
}
