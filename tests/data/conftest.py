"""Shared helpers for the dataset tests: write JSONL rows to a temporary file."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

LABELS = ("billing", "refund", "shipping", "account")


def to_line(row) -> bytes:
    """A dict becomes compact JSON; str and bytes are written as they are."""
    if isinstance(row, bytes):
        return row
    if isinstance(row, str):
        return row.encode()
    return json.dumps(row, ensure_ascii=False).encode()


@pytest.fixture
def write_rows(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: Iterable, name: str = "data.jsonl", *, newline: bytes = b"\n") -> Path:
        path = tmp_path / name
        path.write_bytes(b"".join(to_line(r) + newline for r in rows))
        return path

    return write


def classification_rows(n: int, labels=LABELS, start: int = 0) -> list[dict]:
    return [{"input": f"message number {i}", "label": labels[i % len(labels)]} for i in range(start, start + n)]


def generation_rows(n: int, start: int = 0) -> list[dict]:
    return [{"input": f"question {i}?", "target": f"answer {i}"} for i in range(start, start + n)]
