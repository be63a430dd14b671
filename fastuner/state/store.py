"""Where state lives: the store protocol, reading with version checks, and lock information."""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from fastuner.config.duration import format_duration
from fastuner.errors import UserError
from fastuner.state.migrations import migrate
from fastuner.state.model import FORMAT_VERSION, State


@dataclass(frozen=True)
class LockInfo:
    """Who holds a state lock, for what and since when.

    `lease`: seconds the lock stays valid after its holder last renewed it (the S3 store's lock; 0 for
    the local store's, which the OS releases when its holder dies). `lease_ends` and `lease_left` are
    what a reader of the lock worked out by the store's own clock (S3's, not this machine's): when the
    lease ends and how long that is from now (None when the store did not say its time). They are not
    part of the lock's identity and are not written."""

    id: str
    operation: str
    who: str
    host: str
    pid: int
    created: str
    path: str = ""
    lease: float = 0.0
    lease_ends: str = field(default="", compare=False)
    lease_left: float | None = field(default=None, compare=False)

    @classmethod
    def new(cls, operation: str, path: str = "", *, lease: float = 0.0) -> LockInfo:
        try:
            user = getpass.getuser()
        except Exception:  # no user database entry (containers)
            user = str(os.getuid())
        host = socket.gethostname()
        return cls(id=str(uuid.uuid4()), operation=operation, who=f"{user}@{host}", host=host,
                   pid=os.getpid(), created=datetime.now(UTC).isoformat(timespec="seconds"), path=path,
                   lease=lease)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        del d["lease_ends"], d["lease_left"]
        if not self.lease:
            del d["lease"]  # the local store's lock file stays as it was
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        d = json.loads(text)
        return cls(**{k: d[k] for k in ("id", "operation", "who", "host", "pid", "created")}, path=d.get("path", ""),
                   lease=float(d.get("lease") or 0.0))

    def describe(self) -> str:
        return (f"Lock ID: {self.id}\n  held by: {self.who} (pid {self.pid})\n  since:   {self.created}\n"
                f"  for:     {self.operation}" + (f"\n  lease:   {self._lease_text()}" if self.lease_ends else ""))

    def _lease_text(self) -> str:
        ends = datetime.fromisoformat(self.lease_ends).astimezone(UTC).strftime("%H:%M:%S UTC")
        if self.lease_left is None:
            return (f"ends {ends} unless renewed (the store did not say its time, so fastuner cannot take the "
                    "lock over; if the holder is gone, use force-unlock)")
        if self.lease_left > 0:
            return (f"ends {ends} (in {_seconds(self.lease_left)}) unless its holder renews it; if the holder is "
                    "gone, fastuner takes the lock over then")
        return f"ended {ends} ({_seconds(-self.lease_left)} ago): the next run takes the lock over"


class StateLockedError(UserError):
    def __init__(self, info: LockInfo, location: str, stale_hint: str = "", waited: float = 0.0) -> None:
        super().__init__(
            f"the state is locked: {location}" + (f" (waited {_seconds(waited)} for it)" if waited else ""),
            f"{info.describe()}\nAnother fastuner run is working on this state. Wait for it to finish"
            + (" (or wait longer with --lock-timeout)" if waited else " (or let fastuner wait: --lock-timeout 5m)")
            + (f". {stale_hint}" if stale_hint else
               f", or if it crashed, release the lock with: fastuner force-unlock {info.id}"))
        self.info = info
        self.location = location
        self.stale_hint = stale_hint

    def waited(self, seconds: float) -> StateLockedError:
        """The same refusal, saying how long the lock was waited for."""
        return StateLockedError(self.info, self.location, self.stale_hint, waited=seconds)


class LockLostError(UserError):
    """The lock this run held was taken over, released by someone else, or could not be renewed in time:
    the run must start nothing new (what is running finishes and is recorded)."""

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"lost the state lock on {location}: {reason}; nothing new was started",
                         "Operations already running finished and were recorded in state. Run the command again "
                         "once the lock is free: it picks up where this run stopped.")
        self.reason = reason


def _seconds(seconds: float) -> str:
    return format_duration(timedelta(seconds=seconds)) if seconds >= 1 else f"{seconds:g}s"


class StateStore(Protocol):
    """One state document per project and workspace.

    `write` is atomic and bumps the serial; it refuses to overwrite a state whose serial moved
    underneath (someone wrote without the lock). Failure to persist is fatal, never a warning.
    """

    location: str

    def read(self) -> State | None: ...

    def write(self, state: State) -> State: ...

    def push(self, state: State, *, over: State | None) -> State:
        """Store `state` exactly as given (its lineage and serial), in place of `over`, the version the
        caller read and checked under the lock (`state push`); refuses if the stored one is no longer it."""
        ...

    def lock(self, operation: str) -> AbstractContextManager[LockInfo]:
        """Held for the whole operation; a lock held by another run is waited for up to the store's
        lock timeout (retrying), then refused with `StateLockedError` naming the holder."""
        ...

    def check_lock(self) -> None:
        """Raise `LockLostError` if the lock this store holds is no longer this run's (a lease taken over
        or not renewed in time). The engine asks before starting each operation, and starts nothing new
        once it raises."""
        ...

    def current_lock(self) -> LockInfo | None: ...

    def force_unlock(self, lock_id: str) -> LockInfo: ...

    def history(self) -> Iterator[tuple[str, State]]: ...


RESTORE_BACKUP = "The previous version is kept next to it (.backup); restore it if this one is damaged."


def parse_state(text: str, location: str, *, restore: str = RESTORE_BACKUP) -> State:
    """Decode a state document; refuse corrupt, foreign or newer ones with a clear message. `restore`:
    where the store keeps earlier versions, said when the document is damaged."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the state at {location} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                        f"It may have been edited by hand. {restore}") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise UserError(f"{location} is not a fastuner state (no format_version)")
    version = data["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UserError(
            f"the state at {location} has format_version {version}, newer than this fastuner understands "
            f"({FORMAT_VERSION})", "Upgrade fastuner (pip install -U fastuner) before touching this state.")
    try:
        data = migrate(data)
    except ValueError as exc:
        raise UserError(f"the state at {location} has format_version {version}, which this fastuner cannot read",
                        str(exc)) from None
    try:
        return State.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserError(f"the state at {location} is damaged: {where}: {first['msg']}",
                        f"Fix the field, or restore an earlier version. {restore}") from None


def serialize_state(state: State) -> str:
    return state.model_dump_json(indent=2) + "\n"
