"""A content-addressed object store: an object's key is the SHA-256 of its bytes.

The same bytes always get the same key, and storing bytes that are already there writes nothing (the
existing object is not touched). Objects are immutable. Keys are the store's own business: callers keep
the keys it returns and hand them back, and never build or parse one (the local store's are
`sha256/<first 2 hex>/<64 hex>`; an S3 store's would be `datasets/<sha256>/…` under its prefix).
`ObjectStore` has no local paths, so that an S3 store implements it too: bytes go in by streaming
(`open_writer`, `put_file`: an S3 store HEADs the key, then creates it conditionally, in parts when
large), come back as bytes or as a file placed in a local folder (`materialize`: a hard link here, a
download from S3), and are deleted by key.

`LocalObjectStore` writes atomically: bytes go to a temporary file in the store, are fsynced, then
get the key's name by a hard link (which, unlike a rename, never replaces an object already there)
and the directory is fsynced, so a reader sees a whole object or none.
Streaming writes (`open_writer`) stage under `<root>/tmp/`, on the same filesystem as the objects,
because the key is known only when the last byte has been written. A write the disk refuses (full,
read-only) removes its temporary file and raises a `DiagnosticsError` naming the store and the reason,
so that a full disk is a message, never a traceback or a half-written object.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from fastuner.errors import DiagnosticsError

_KEY = re.compile(r"sha256/([0-9a-f]{2})/\1[0-9a-f]{62}")
_COPY_BYTES = 1 << 20


class ObjectWriter(Protocol):
    size: int  # bytes written so far

    @property
    def sha256(self) -> str: ...  # of the bytes written so far
    def write(self, data: bytes) -> None: ...
    def commit(self) -> str: ...
    def abort(self) -> None: ...


class ObjectStore(Protocol):
    def put_bytes(self, data: bytes) -> str: ...
    def put_file(self, path: str | Path) -> str: ...
    def open_writer(self) -> ObjectWriter: ...
    def get(self, key: str) -> bytes: ...
    def exists(self, key: str) -> bool: ...

    def materialize(self, key: str, dest_dir: str | Path, name: str) -> Path:
        """Place the object at `dest_dir/name` (atomically; an existing file is replaced), for a program
        that reads files."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; nothing happens if it is not there. The caller decides that no one still
        uses it (state knows which keys are referenced; the store does not)."""
        ...


def key_for(sha256_hex: str) -> str:
    return f"sha256/{sha256_hex[:2]}/{sha256_hex}"


def check_key(key: str) -> str:
    """`key` if it is a well-formed object key (so it can never name a path outside the store)."""
    if not _KEY.fullmatch(key):
        raise ValueError(f"not an object key: {key!r}")
    return key


class LocalObjectStore:
    """Objects under `root`, at `root/<key>`, made read-only."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """Where the object lives on this disk (this store only; not part of `ObjectStore`)."""
        return self.root / check_key(key)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def get(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except FileNotFoundError:
            raise DiagnosticsError.single(f"object {key} is missing from the store at {self.root}") from None

    def materialize(self, key: str, dest_dir: str | Path, name: str) -> Path:
        """A hard link when the filesystem allows, else a copy: restoring a run folder takes seconds. The
        linked file shares the object's inode, and objects are read-only, so a program reading the
        channel cannot alter the store by accident."""
        source = self.path(key)
        if not source.is_file():
            raise DiagnosticsError.single(f"object {key} is missing from the store at {self.root}")
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / name
        if dest.exists() and os.path.samefile(dest, source):
            return dest
        temp = dest_dir / f".{name}.tmp-{os.getpid()}"
        temp.unlink(missing_ok=True)
        try:
            try:
                os.link(source, temp)
            except OSError:  # another filesystem, or links not allowed
                shutil.copyfile(source, temp)
            os.replace(temp, dest)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return dest

    def put_bytes(self, data: bytes) -> str:
        key = key_for(hashlib.sha256(data).hexdigest())
        target = self.path(key)
        if target.is_file():
            return key
        with self.writing():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            except BaseException:
                Path(temp).unlink(missing_ok=True)
                raise
            self._install(Path(temp), target)
        return key

    def put_file(self, path: str | Path) -> str:
        writer = self.open_writer()
        try:
            with open(path, "rb") as source:
                while chunk := source.read(_COPY_BYTES):
                    writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def open_writer(self) -> _LocalWriter:
        staging = self.root / "tmp"
        with self.writing():
            staging.mkdir(parents=True, exist_ok=True)
            return _LocalWriter(self, staging)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """A write the disk refuses (full, read-only, no permission) as a message naming the store."""
        try:
            yield
        except OSError as exc:
            raise DiagnosticsError.single(
                f"cannot write to the object store at {self.root}: {exc.strerror or exc}",
                "Free space on that disk (or make the folder writable), then run again: nothing "
                "half-written was kept.") from None

    def _install(self, temp: Path, target: Path) -> None:
        """Give the fsynced `temp` the name `target`, unless `target` exists (then it is left untouched)."""
        try:
            os.chmod(temp, 0o444)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(temp, target)  # fails if target exists: never replaces a stored object
            except FileExistsError:
                pass
            except OSError:  # a filesystem without hard links
                if not target.is_file():
                    os.replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(target.parent)


class _LocalWriter:
    """Streams bytes to a staging file while hashing them; `commit` files it under its key."""

    def __init__(self, store: LocalObjectStore, staging: Path) -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=staging, prefix="obj-")
        self._temp = Path(name)
        self._file = os.fdopen(fd, "wb")
        self._sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        with self._store.writing():
            self._file.write(data)
        self._sha.update(data)
        self.size += len(data)

    def commit(self) -> str:
        try:
            with self._store.writing():
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                key = key_for(self._sha.hexdigest())
                self._store._install(self._temp, self._store.path(key))
        except BaseException:
            self.abort()
            raise
        return key

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # its buffer cannot be flushed to a full disk: dropped
            self._file.close()
        self._temp.unlink(missing_ok=True)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
