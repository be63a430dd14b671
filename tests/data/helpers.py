"""Rows for the dataset tests."""

from __future__ import annotations

import json

LABELS = ("billing", "refund", "shipping", "account")


def to_line(row) -> bytes:
    """A dict becomes compact JSON; str and bytes are written as they are."""
    if isinstance(row, bytes):
        return row
    if isinstance(row, str):
        return row.encode()
    return json.dumps(row, ensure_ascii=False).encode()


def classification_rows(n: int, labels=LABELS, start: int = 0) -> list[dict]:
    return [{"input": f"message number {i}", "label": labels[i % len(labels)]} for i in range(start, start + n)]


def generation_rows(n: int, start: int = 0) -> list[dict]:
    return [{"input": f"question {i}?", "target": f"answer {i}"} for i in range(start, start + n)]
