"""A dataset file cut short while the scan reads it (a tool rewriting it; found by tests/stress/faults.py)
ends the read in the middle of a row: that row is not the file's fault, and the scan says the file
changed while it was read, not that row N is broken JSON. A file that did not change keeps its row
errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fastuner.data import blocks, scan, scan_dataset
from fastuner.errors import DiagnosticsError


def write(path: Path, n: int) -> bytes:
    data = "".join(json.dumps({"input": f"message number {i}", "label": "ab"[i % 2]}) + "\n" for i in range(n)).encode()
    path.write_bytes(data)
    return data


def test_a_file_cut_at_a_row_while_it_is_read(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "d.jsonl"
    data = write(path, 2000)
    original = blocks.read_blocks

    def cut_after_the_first_block(file, block_bytes, file_hash):
        for i, block in enumerate(original(file, block_bytes, file_hash)):
            yield block
            if i == 0:  # the writer keeps the first rows (to a row boundary): the reader is already past them
                path.write_bytes(data[: data.index(b"\n", 1000) + 1])

    monkeypatch.setattr(scan, "read_blocks", cut_after_the_first_block)
    with pytest.raises(DiagnosticsError) as raised:
        scan_dataset(path, "classification", workers=0, block_bytes=4096 + 37)
    [d] = raised.value.diagnostics
    assert d.summary.startswith("dataset file changed while it was being read:"), d.summary


def test_a_broken_row_in_a_file_at_rest_is_still_its_row(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    data = write(path, 300)
    path.write_bytes(data[:-5])  # the last row cut, and nobody writing
    with pytest.raises(DiagnosticsError) as raised:
        scan_dataset(path, "classification", workers=0)
    assert "d.jsonl:300:" in str(raised.value) and "not valid JSON" in str(raised.value)
