"""Fixtures shared by every test folder."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fastuner.cli.main import main


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

    `clock` (optional) is the current time the command sees."""

    def run(*args: str, cwd: Path | None = None, clock: Clock | None = None) -> Run:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setenv("COLUMNS", "200")
        code = main(list(args), clock=clock)
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
