"""The `write_rows` fixture: write JSONL rows to a temporary file."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from tests.data.helpers import to_line


@pytest.fixture
def write_rows(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: Iterable, name: str = "data.jsonl", *, newline: bytes = b"\n") -> Path:
        path = tmp_path / name
        path.write_bytes(b"".join(to_line(r) + newline for r in rows))
        return path

    return write
