"""Fixtures shared by every test folder."""

from __future__ import annotations

from dataclasses import dataclass
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


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `fastuner ARGS` in-process in a folder; returns exit code and captured output."""

    def run(*args: str, cwd: Path | None = None) -> Run:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setenv("COLUMNS", "200")
        code = main(list(args))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run
