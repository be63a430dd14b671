"""The provider protocol: one small interface per resource kind; all side effects live behind it.

Contract (every implementation, local, SageMaker or in-memory):
- `read` never changes anything. A resource that no longer exists reads as status "missing".
- `create` is idempotent by `change.physical_name`: names are deterministic, so a create re-run after a
  crash adopts what the crashed run started instead of starting it twice.
- `delete` of something that does not exist returns silently.
- Long operations honour `ctx.wait` (False with `apply --no-wait`) and `ctx.cancelled` (the first
  Ctrl-C): they return `Outcome.pending(...)` and leave the work running, recorded so that the next run
  picks it up; they never orphan work.
- Failures the user can act on raise `ProviderError` with what to do; anything else is a bug.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from fastuner.errors import Diagnostic
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation
from fastuner.state.model import ResourceState


class ProviderError(Exception):
    """A failure of one resource, explained: what happened and what to do."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class OutcomeStatus(StrEnum):
    READY = "ready"  # the work is finished
    PENDING = "pending"  # the work was started and left running


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    outputs: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""

    @classmethod
    def ready(cls, outputs: Mapping[str, Any]) -> Outcome:
        return cls(OutcomeStatus.READY, dict(outputs))

    @classmethod
    def pending(cls, outputs: Mapping[str, Any], detail: str = "") -> Outcome:
        return cls(OutcomeStatus.PENDING, dict(outputs), detail)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What an operation may use besides its change."""

    address: str
    spec_dir: Path
    upstream: Mapping[str, ResourceState] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _text: None
    warning: Callable[[str], None] = lambda _text: None  # a line apply prints and keeps (not transient)
    cancelled: threading.Event = field(default_factory=threading.Event)
    wait: bool = True
    now: Callable[[], datetime] = utcnow
    referenced: Callable[[], set[str]] = set  # object keys other resources still use (garbage safety)


class ResourceProvider(Protocol):
    kind: str

    def read(self, rs: ResourceState) -> Observation: ...

    def create(self, change: Change, ctx: Context) -> Outcome: ...

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome: ...

    def delete(self, rs: ResourceState, ctx: Context) -> None: ...


@dataclass
class Provider:
    """A named set of resource providers, built in one place (the CLI's composition root)."""

    name: str
    resources: Mapping[str, ResourceProvider]
    priced: bool = False
    unsupported: Mapping[str, str] = field(default_factory=dict)
    training_code_hash: Callable[[], str] = lambda: ""
    keep_previous: int = 3  # earlier trained versions of each adapter kept restorable (the adapter cache)
    checks: Callable[[], list[Diagnostic]] = list  # what this machine lacks to apply the spec (validate, plan)

    def for_kind(self, kind: str) -> ResourceProvider:
        try:
            return self.resources[kind]
        except KeyError:
            raise ProviderError(f"the {self.name} provider has no implementation for {kind} resources") from None
