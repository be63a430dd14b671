"""How the engine reports progress: a small protocol the terminal view implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastuner.plan.model import Change
from fastuner.plan.status import ResultStatus


@dataclass(frozen=True)
class Result:
    address: str
    action: str
    status: ResultStatus
    message: str = ""
    elapsed: float = 0.0
    deposed: str | None = None


class Reporter(Protocol):
    def started(self, change: Change) -> None: ...

    def progress(self, address: str, text: str) -> None: ...

    def finished(self, change: Change, result: Result) -> None: ...

    def notice(self, text: str) -> None: ...


class NullReporter:
    def started(self, change: Change) -> None:
        pass

    def progress(self, address: str, text: str) -> None:
        pass

    def finished(self, change: Change, result: Result) -> None:
        pass

    def notice(self, text: str) -> None:
        pass
