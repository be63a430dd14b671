"""Diagnostics for people: summary, file:line:col, the offending line with a caret, and what to do."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fastuner.errors import Diagnostic, Severity

SNIPPET = 120


def _source_line(file: str, line: int) -> str | None:
    try:
        with open(Path(file), "rb") as f:
            for i, raw in enumerate(f, 1):
                if i == line:
                    return raw.decode("utf-8", errors="replace").rstrip("\r\n")
    except OSError:
        return None
    return None


def render_diagnostics(diagnostics: Iterable[Diagnostic], console: Console) -> None:
    for d in diagnostics:
        label = "[bold red]Error:[/bold red]" if d.severity is Severity.ERROR else "[bold yellow]Warning:[/bold yellow]"
        console.print(f"{label} {escape(d.summary)}")
        if d.source is not None:
            console.print(f"  [dim]on[/dim] {escape(str(d.source))}" + (
                f" [dim]({escape(d.address)})[/dim]" if d.address else ""))
            if d.source.line:
                text = _source_line(d.source.file, d.source.line)
                if text is not None:
                    col = max(1, d.source.column or 1)
                    start = max(0, col - 1 - SNIPPET // 2) if len(text) > SNIPPET else 0
                    shown = text[start:start + SNIPPET]
                    prefix = f"  {d.source.line:>4} | "
                    console.print(escape(prefix + shown), highlight=False, soft_wrap=True)
                    if d.source.column:
                        console.print(" " * (len(prefix) + col - 1 - start) + "[red]^[/red]", highlight=False)
        elif d.address:
            console.print(f"  [dim]on[/dim] {escape(d.address)}")
        if d.detail:
            for line in d.detail.splitlines():
                console.print(f"  {escape(line)}", highlight=False)
        console.print()
