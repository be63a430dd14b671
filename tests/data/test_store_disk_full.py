"""A full disk under the local object store (found by tests/stress/faults.py on a small tmpfs): every
write the disk refuses is a message naming the store and the reason, never a traceback, and leaves no
half-written object or staged file behind. ENOSPC is raised here by the one OS call each path makes
(the stress run meets the real kernel error)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fastuner.data import store as store_module
from fastuner.data.store import LocalObjectStore
from fastuner.errors import DiagnosticsError


def full(*_args, **_kw):
    raise OSError(errno.ENOSPC, "No space left on device")


def files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_put_bytes_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    monkeypatch.setattr(store_module.os, "fsync", full)
    with pytest.raises(DiagnosticsError, match=r"cannot write to the object store at .*objects: No space left"):
        store.put_bytes(b"some bytes")
    assert files(tmp_path) == []


def test_a_streaming_write_on_a_full_disk(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    writer = store.open_writer()

    class FullFile:
        def write(self, data: bytes) -> None:
            full()

        def close(self) -> None:
            full()  # the buffer cannot be flushed either

    writer._file = FullFile()
    with pytest.raises(DiagnosticsError, match="No space left on device") as raised:
        writer.write(b"x" * 1000)
    assert "Free space" in raised.value.diagnostics[0].detail
    writer.abort()
    assert files(tmp_path) == []


def test_a_commit_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    store = LocalObjectStore(tmp_path / "objects")
    writer = store.open_writer()
    writer.write(b"x" * 1000)
    monkeypatch.setattr(store_module.os, "fsync", full)
    with pytest.raises(DiagnosticsError, match="No space left on device"):
        writer.commit()
    assert files(tmp_path) == []
