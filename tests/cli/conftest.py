from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastuner.cli.main import main
from tests.cli.helpers import intents_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


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


SPEC = """\
version: 1
project: demo
datasets:
  intents:
    path: data/intents.jsonl
    task: classification
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with one valid classification dataset of 200 rows."""
    write_jsonl(tmp_path / "data" / "intents.jsonl", intents_rows(200))
    (tmp_path / "fastuner.yaml").write_text(SPEC)
    return tmp_path


@pytest.fixture
def example_copy(tmp_path: Path):
    def copy(name: str) -> Path:
        dest = tmp_path / name
        shutil.copytree(ROOT / "examples" / name, dest, ignore=shutil.ignore_patterns("state", ".fastuner"))
        return dest

    return copy
