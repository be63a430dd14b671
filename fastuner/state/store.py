"""Where state lives: the store protocol, reading with version checks, and lock information."""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from pydantic import ValidationError

from fastuner.config.duration import format_duration
from fastuner.errors import UserError
from fastuner.state.migrations import migrate
from fastuner.state.model import FORMAT_VERSION, State


@dataclass(frozen=True)
class LockInfo:
    id: str
    operation: str
    who: str
    host: str
    pid: int
    created: str
    path: str = ""

    @classmethod
    def new(cls, operation: str, path: str = "") -> LockInfo:
        try:
            user = getpass.getuser()
        except Exception:  # no user database entry (containers)
            user = str(os.getuid())
        host = socket.gethostname()
        return cls(id=str(uuid.uuid4()), operation=operation, who=f"{user}@{host}", host=host,
                   pid=os.getpid(), created=datetime.now(UTC).isoformat(timespec="seconds"), path=path)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LockInfo:
        d = json.loads(text)
        return cls(**{k: d[k] for k in ("id", "operation", "who", "host", "pid", "created")}, path=d.get("path", ""))

    def describe(self) -> str:
        return (f"Lock ID: {self.id}\n  held by: {self.who} (pid {self.pid})\n  since:   {self.created}\n"
                f"  for:     {self.operation}")


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

    def lock(self, operation: str) -> AbstractContextManager[LockInfo]:
        """Held for the whole operation; a lock held by another run is waited for up to the store's
        lock timeout (retrying), then refused with `StateLockedError` naming the holder."""
        ...

    def current_lock(self) -> LockInfo | None: ...

    def force_unlock(self, lock_id: str) -> LockInfo: ...

    def history(self) -> Iterator[tuple[str, State]]: ...


def parse_state(text: str, location: str) -> State:
    """Decode a state document; refuse corrupt, foreign or newer ones with a clear message."""
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"the state at {location} is not valid JSON (line {exc.lineno}, column {exc.colno})",
                        "It may have been edited by hand. The previous version is kept next to it "
                        "(.backup); restore it if this one is damaged.") from None
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
                        "Restore the previous version (.backup) or fix the field.") from None


def serialize_state(state: State) -> str:
    return state.model_dump_json(indent=2) + "\n"
