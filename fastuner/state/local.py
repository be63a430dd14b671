"""The local state backend: a JSON file, written atomically, with the previous version kept, and an
OS-level lock. The state, its backup and the lock file are readable by their owner only (0600): they
name every resource, its URLs and outputs.

The lock is a file next to the state, holding who/where/why, and kept under `flock` for as long as it
is held. It is written and flocked under a temporary name first and then hard-linked to its place (which
fails if a lock file is there): another run looking at the lock file the moment it appears finds it
already held and naming its holder. (Created in place with `O_EXCL`, a looker could open it between its
creation and its creator's flock, take the flock itself and make the creator fail.) A lock file whose
flock is free was left by a process that died (the OS releases flocks of dead processes): if that
process was on this host it is released with a note; otherwise the holder is shown and
`force-unlock ID` releases it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from fastuner.errors import UserError
from fastuner.state.model import State
from fastuner.state.store import LockInfo, StateLockedError, parse_state, serialize_state

STATE_MODE = 0o600  # state, its backup and the lock: owner-only (they hold resource names, URLs, outputs)
UNREADABLE_GRACE_S = 5.0  # an unreadable lock file older than this was left by a crash, not a creator at work


class LocalStateStore:
    def __init__(self, path: Path, *, on_notice=None, lock_timeout: float = 0.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout  # seconds to wait for a lock held by another run
        self.location = str(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.backup_path = self.path.with_name(self.path.name + ".backup")
        self._notice = on_notice or (lambda msg: None)
        self._seen: tuple[tuple[int, int, int, int], str, int] | None = None  # file fingerprint, lineage, serial

    # --- reading and writing -------------------------------------------------------------------

    def read(self) -> State | None:
        # The bytes and the fingerprint come from one open file: a write renaming a new version over
        # the path between reading and stat-ing it would otherwise pair the new file's fingerprint with
        # the old serial, and the next write would refuse ("it changed underneath").
        try:
            with open(self.path, "rb") as f:
                stat = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"the state at {self.location} is not UTF-8 text") from None
        state = parse_state(text, self.location)
        self._seen = (_fingerprint(stat), state.lineage, state.serial)
        return state

    def write(self, state: State) -> State:
        """Persist `state` with serial + 1. The file on disk must still be at `state.serial`.

        The previous version becomes `.backup` by a hard link (no copy), and the new one replaces the
        file by an atomic rename: a crash at any point leaves a complete state file."""
        current = self._current()
        if current is not None:
            lineage, serial = current
            if lineage != state.lineage:
                raise UserError(f"refusing to overwrite {self.location}: it belongs to another state lineage",
                                f"on disk: {lineage}, writing: {state.lineage}")
            if serial != state.serial:
                raise UserError(f"refusing to overwrite {self.location}: it changed underneath "
                                f"(serial {serial}, expected {state.serial})",
                                "Another process wrote it without holding the lock.")
        new = state.model_copy(update={"serial": state.serial + 1})
        self._replace(new, keep_previous=current is not None)
        return new

    def push(self, state: State, *, over: State | None) -> State:
        current = self._current()
        if current != ((over.lineage, over.serial) if over is not None else None):
            raise UserError(f"refusing to overwrite {self.location}: it changed while pushing",
                            "Another process wrote it without holding the lock; run `state push` again.")
        self._replace(state, keep_previous=current is not None)
        return state

    def _replace(self, new: State, *, keep_previous: bool) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if keep_previous:
                with contextlib.suppress(PermissionError):  # a state written before files were private: its backup is too
                    os.chmod(self.path, STATE_MODE)
                backup_tmp = self.backup_path.with_name(f".{self.backup_path.name}.{os.getpid()}.tmp")
                backup_tmp.unlink(missing_ok=True)
                os.link(self.path, backup_tmp)
                os.replace(backup_tmp, self.backup_path)
            written = _atomic_write(self.path, serialize_state(new).encode("utf-8"))
        except OSError as exc:  # a full disk, a read-only folder: the state file is as it was
            raise UserError(f"cannot write the state {self.location}: {exc.strerror or exc}",
                            f"Free space on that disk or make {self.path.parent} writable, then run again: the "
                            "state file was not changed.") from None
        self._seen = (_fingerprint(written), new.lineage, new.serial)

    def _current(self) -> tuple[str, int] | None:
        """Lineage and serial on disk; parsed only when the file is not the one this store last saw."""
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        if self._seen is not None and self._seen[0] == _fingerprint(stat):
            return self._seen[1], self._seen[2]
        state = self.read()
        return (state.lineage, state.serial) if state is not None else None

    def history(self) -> Iterator[tuple[str, State]]:
        if self.backup_path.exists():
            yield str(self.backup_path), parse_state(self.backup_path.read_text("utf-8"), str(self.backup_path))

    # --- locking -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, operation: str) -> Iterator[LockInfo]:
        info = LockInfo.new(operation, self.location)
        fd = self._acquire_waiting(info)
        try:
            yield info
        finally:
            self._release(fd)

    def check_lock(self) -> None:
        """Never raises: the OS keeps the lock for as long as this process lives."""

    def current_lock(self) -> LockInfo | None:
        try:
            return LockInfo.from_json(self.lock_path.read_text("utf-8"))
        except (FileNotFoundError, ValueError, KeyError):
            return None

    def force_unlock(self, lock_id: str) -> LockInfo:
        info = self.current_lock()
        if info is None:
            raise UserError(f"the state at {self.location} is not locked")
        if info.id != lock_id:
            raise UserError(f"lock ID {lock_id} does not match the lock on {self.location}", info.describe())
        self.lock_path.unlink(missing_ok=True)
        return info

    def _acquire_waiting(self, info: LockInfo) -> int:
        """Retry a held lock until `lock_timeout` runs out (backing off up to 1 s between tries), then
        refuse naming the holder. A stale lock is cleared by `_acquire` itself and needs no wait."""
        deadline = time.monotonic() + self.lock_timeout
        delay, told = 0.05, False
        while True:
            try:
                return self._acquire(info)
            except StateLockedError as exc:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise (exc.waited(self.lock_timeout) if self.lock_timeout else exc) from None
                if not told:
                    told = True
                    self._notice(f"the state is locked by {exc.info.who} (pid {exc.info.pid}, {exc.info.operation}); "
                                 "waiting for it (--lock-timeout)")
                time.sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def _acquire(self, info: LockInfo) -> int:
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            # a fresh file under a name nobody else opens: flocked and written before it becomes the lock
            tmp = self.lock_path.with_name(f".{self.lock_path.name}.{os.getpid()}.{info.id}.tmp")
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, STATE_MODE)
        except OSError as exc:  # a read-only folder, a full disk
            raise self._cannot_lock(exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                os.write(fd, info.to_json().encode())
                os.fsync(fd)
            except OSError as exc:
                raise self._cannot_lock(exc) from None
            for _ in range(50):
                try:
                    os.link(tmp, self.lock_path)  # atomic, and refused when a lock file is there
                except FileExistsError:
                    self._inspect_existing()
                    continue
                except OSError as exc:
                    raise self._cannot_lock(exc) from None
                return fd
        except BaseException:
            os.close(fd)
            raise
        finally:
            tmp.unlink(missing_ok=True)
        os.close(fd)
        raise UserError(f"could not take the lock on {self.location}: it keeps changing hands")

    def _cannot_lock(self, exc: OSError) -> UserError:
        return UserError(f"cannot take the lock on {self.location}: cannot write {self.lock_path}: "
                         f"{exc.strerror or exc}",
                         f"The state folder must be writable (and have space): free space or make "
                         f"{self.lock_path.parent} writable, or keep the state elsewhere (`backend:` in "
                         "fastuner.yaml). Nothing was changed.")

    def _inspect_existing(self) -> None:
        """The lock file exists: raise if a live process holds it; clear it if its holder died here."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return  # released meanwhile: try again
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                info = self._read_info(fd)
                raise StateLockedError(info, self.location) from None
            if not _same_file(fd, self.lock_path):
                return  # replaced while we looked: try again
            info = self._read_info(fd)
            if info.id == "unknown":
                if time.time() - os.fstat(fd).st_mtime < UNREADABLE_GRACE_S:
                    time.sleep(0.01)  # its creator is between creating the file and writing who it is
                    return
                # its creator died between creating the file and writing who it is
                self._notice(f"released an unreadable lock file left by a process that died while taking it "
                             f"({self.lock_path})")
                self.lock_path.unlink(missing_ok=True)
                return
            if info.host != socket.gethostname():
                raise StateLockedError(
                    info, self.location,
                    f"It was taken on another host ({info.host}); if that run is gone, release it with: "
                    f"fastuner force-unlock {info.id}")
            self._notice(f"released a stale lock left by {info.who} (pid {info.pid}, {info.operation}, "
                         f"since {info.created}); that process is no longer running")
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)

    @staticmethod
    def _read_info(fd: int) -> LockInfo:
        os.lseek(fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(fd, 65536):
            data += chunk
        try:
            return LockInfo.from_json(data.decode())
        except (ValueError, KeyError):
            return LockInfo(id="unknown", operation="unknown", who="unknown", host=socket.gethostname(),
                            pid=-1, created="")

    def _release(self, fd: int) -> None:
        try:
            if _same_file(fd, self.lock_path):
                self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(fd)


def _fingerprint(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600), atomically: a pulled state, a saved plan."""
    _atomic_write(path, data)


def _atomic_write(path: Path, data: bytes) -> os.stat_result:
    """Write to a temp file in the same folder, fsync it, rename over `path`, fsync the folder.

    Returns the written file's stat, taken from its own descriptor (a rename keeps inode and mtime)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)  # a leftover of a crash may have other permissions; O_CREAT keeps them
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, STATE_MODE)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
            stat = os.fstat(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:  # nothing half-written is left beside the state
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return stat
