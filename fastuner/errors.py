"""Two kinds of error: user errors are data (diagnostics), everything else is a bug.

A `Diagnostic` says what is wrong, where (file, line, column — for a JSONL dataset the line is the row
number) and what to do. Code that finds several problems collects them and raises one
`DiagnosticsError`; the CLI prints them with the offending source line and a caret and exits 1.
Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Source:
    """A position in a user's file; line and column are 1-based, None when unknown."""

    file: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.column is not None:
                parts.append(str(self.column))
        return ":".join(parts)


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    summary: str
    detail: str = ""
    source: Source | None = None
    address: str | None = None

    @classmethod
    def error(cls, summary: str, detail: str = "", *, source: Source | None = None,
              address: str | None = None) -> Diagnostic:
        return cls(Severity.ERROR, summary, detail, source, address)

    @classmethod
    def warning(cls, summary: str, detail: str = "", *, source: Source | None = None,
                address: str | None = None) -> Diagnostic:
        return cls(Severity.WARNING, summary, detail, source, address)

    def to_dict(self) -> dict:
        out: dict = {"severity": str(self.severity), "summary": self.summary, "detail": self.detail}
        if self.address:
            out["address"] = self.address
        if self.source:
            out["source"] = {"file": self.source.file, "line": self.source.line,
                             "column": self.source.column}
        return out


@dataclass
class DiagnosticsError(Exception):
    """One or more user errors; never carries a traceback to the user."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "; ".join(
            f"{d.source}: {d.summary}" if d.source else d.summary for d in self.diagnostics
        )

    @classmethod
    def single(cls, summary: str, detail: str = "", *, source: Source | None = None,
               address: str | None = None) -> DiagnosticsError:
        return cls([Diagnostic.error(summary, detail, source=source, address=address)])


class UserError(DiagnosticsError):
    """Shorthand for a single error with no source position (a missing file, a refused lock)."""

    def __init__(self, summary: str, detail: str = "", *, address: str | None = None) -> None:
        super().__init__([Diagnostic.error(summary, detail, address=address)])


def relpath(path: str | Path, base: Path | None = None) -> str:
    """A path as the user should see it: relative to `base` (default cwd) when below it."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to((base or Path.cwd()).resolve()))
    except ValueError:
        return str(p)
