"""The content-addressed local store: same bytes, same key, nothing rewritten; atomic; read-only."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from fastuner.data import LocalObjectStore
from fastuner.errors import DiagnosticsError


def test_key_is_the_sha256_of_the_bytes(tmp_path):
    store = LocalObjectStore(tmp_path)
    digest = hashlib.sha256(b"hello\n").hexdigest()
    key = store.put_bytes(b"hello\n")
    assert key == f"sha256/{digest[:2]}/{digest}"
    assert store.path(key) == tmp_path / "sha256" / digest[:2] / digest
    assert store.get(key) == b"hello\n" and store.exists(key)


def test_same_content_same_key_and_the_object_is_not_rewritten(tmp_path):
    store = LocalObjectStore(tmp_path)
    key = store.put_bytes(b"same bytes")
    before = os.stat(store.path(key))
    assert store.put_bytes(b"same bytes") == key
    source = tmp_path / "src.txt"
    source.write_bytes(b"same bytes")
    assert store.put_file(source) == key
    writer = store.open_writer()
    writer.write(b"same ")
    writer.write(b"bytes")
    assert writer.commit() == key
    after = os.stat(store.path(key))
    assert (after.st_ino, after.st_mtime_ns, after.st_ctime_ns) == (before.st_ino, before.st_mtime_ns,
                                                                   before.st_ctime_ns)
    assert not list((tmp_path / "tmp").iterdir())  # the streamed copy was dropped


def test_different_content_different_key(tmp_path):
    store = LocalObjectStore(tmp_path)
    assert store.put_bytes(b"a") != store.put_bytes(b"b")


def test_objects_are_read_only(tmp_path):
    store = LocalObjectStore(tmp_path)
    mode = stat.S_IMODE(os.stat(store.path(store.put_bytes(b"x"))).st_mode)
    assert mode & 0o222 == 0


def test_streaming_writer_hashes_and_aborts_cleanly(tmp_path):
    store = LocalObjectStore(tmp_path)
    writer = store.open_writer()
    writer.write(b"partial")
    writer.abort()
    assert not list((tmp_path / "tmp").iterdir())
    assert not (tmp_path / "sha256").exists()
    writer = store.open_writer()
    writer.write(b"abc")
    assert writer.size == 3 and writer.sha256 == hashlib.sha256(b"abc").hexdigest()


def test_keys_that_are_not_keys_are_refused(tmp_path):
    store = LocalObjectStore(tmp_path)
    for key in ("../../etc/passwd", "sha256/ab/" + "0" * 64, "sha256/00/" + "0" * 63, "md5/00/" + "0" * 64):
        with pytest.raises(ValueError, match="not an object key"):
            store.path(key)


def test_missing_object_is_a_clear_error(tmp_path):
    store = LocalObjectStore(tmp_path)
    key = "sha256/00/" + "0" * 64
    assert not store.exists(key)
    with pytest.raises(DiagnosticsError, match="is missing from the store"):
        store.get(key)


def test_materialize_hard_links_and_replaces_an_old_file(tmp_path):
    store = LocalObjectStore(tmp_path / "store")
    key = store.put_bytes(b'{"input":"a","label":"b"}\n')
    channel = tmp_path / "channels" / "train"
    channel.mkdir(parents=True)
    (channel / "train.jsonl").write_text("stale\n")
    placed = store.materialize(key, channel, "train.jsonl")
    assert placed == channel / "train.jsonl"
    assert placed.read_bytes() == store.get(key)
    assert os.stat(placed).st_ino == os.stat(store.path(key)).st_ino
    assert store.materialize(key, channel, "train.jsonl") == placed  # again: nothing to do
    assert sorted(p.name for p in channel.iterdir()) == ["train.jsonl"]


def test_materialize_copies_across_filesystems(tmp_path):
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs a second filesystem")
    store = LocalObjectStore(tmp_path / "store")
    key = store.put_bytes(b"copied\n")
    dest = other / f"fastuner-test-{os.getpid()}"
    try:
        placed = store.materialize(key, dest, "x.jsonl")
        assert placed.read_bytes() == b"copied\n"
        assert os.stat(placed).st_ino != os.stat(store.path(key)).st_ino
    finally:
        for p in dest.glob("*"):
            p.unlink()
        dest.rmdir()


def test_delete_removes_the_object_and_is_silent_when_it_is_gone(tmp_path):
    store = LocalObjectStore(tmp_path)
    key, other = store.put_bytes(b"gone"), store.put_bytes(b"kept")
    store.delete(key)
    store.delete(key)
    assert not store.exists(key) and store.exists(other)
    with pytest.raises(ValueError, match="not an object key"):
        store.delete("../outside")
