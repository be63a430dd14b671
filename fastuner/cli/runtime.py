"""What the composition root is handed rather than reading globally: the current time and the
environment. `main(argv, clock=..., environ=...)` sets them for one command; everything the command
wires (the spec's variables and workspace, the provider's programs and checks, every expiry and
idleness decision) reads them from here, so tests move a clock and pass an environment instead of
sleeping or patching `os.environ`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime


def system_clock() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Runtime:
    clock: Callable[[], datetime] = system_clock
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    # the values of the spec's sensitive variables once it is loaded: masked in the diagnostics printed
    sensitive: list[str] = field(default_factory=list)


_CURRENT: ContextVar[Runtime | None] = ContextVar("fastuner_runtime", default=None)


def current() -> Runtime:
    """The running command's runtime; outside `main` (library use), the system clock and `os.environ`."""
    return _CURRENT.get() or Runtime()


@contextmanager
def running(runtime: Runtime) -> Iterator[Runtime]:
    token = _CURRENT.set(runtime)
    try:
        yield runtime
    finally:
        _CURRENT.reset(token)
