from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.cli.helpers import intents_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


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
