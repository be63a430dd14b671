"""Live progress of apply: one line per finished operation, and a live panel of running ones with
elapsed time and their latest progress text (step, loss, ETA). Plain lines when not a terminal (CI):
each new progress text is printed as it comes (the provider reports only news, e.g. a logged step), so a
CI log reads like the live panel, step by step."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from fastuner.config.duration import format_elapsed
from fastuner.plan.status import ResultStatus

VERBS = {"create": "Creating", "update": "Updating", "replace": "Replacing", "delete": "Destroying"}
DONE = {"create": "Created", "update": "Updated", "replace": "Replaced", "delete": "Destroyed"}


class ProgressView:
    """Implements the engine's Reporter protocol (structurally: views do not import the engine)."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live_enabled = console.is_terminal if live is None else live
        self._running: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None

    def __enter__(self) -> ProgressView:
        if self.live_enabled:
            self._live = Live(self._panel(), console=self.console, refresh_per_second=4, transient=True,
                              get_renderable=self._panel)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)
            self._live = None

    def _panel(self) -> Group:
        now = time.monotonic()
        with self._lock:
            lines = [Text.from_markup(
                f"[cyan]⠿[/cyan] {escape(a)}: {VERBS.get(info['action'], info['action'])}… "
                f"[dim]{format_elapsed(now - info['start'])} elapsed[/dim]"
                + (f"  {escape(info['text'])}" if info.get("text") else ""))
                for a, info in sorted(self._running.items())]
        return Group(*lines)

    # --- Reporter -----------------------------------------------------------------------------

    def started(self, change: Any) -> None:
        with self._lock:
            self._running[change.address] = {"action": str(change.action), "start": time.monotonic(), "text": ""}
        if not self.live_enabled:
            self.console.print(f"{escape(change.address)}: {VERBS.get(str(change.action), str(change.action))}…",
                               highlight=False)

    def progress(self, address: str, text: str) -> None:
        with self._lock:
            info = self._running.get(address)
            if info is None or info["text"] == text:
                return
            info["text"] = text
            elapsed = time.monotonic() - info["start"]
        if not self.live_enabled:
            self.console.print(f"{escape(address)}: still {VERBS.get(info['action'], '').lower()}… "
                               f"[{format_elapsed(elapsed)} elapsed] {escape(text)}", highlight=False)

    def finished(self, change: Any, result: Any) -> None:
        with self._lock:
            self._running.pop(change.address, None)
        action = str(change.action)
        label = change.address + (f" (old {result.deposed})" if getattr(result, "deposed", None) else "")
        took = f" after {format_elapsed(result.elapsed)}" if result.elapsed >= 1 else ""
        if result.status is ResultStatus.DONE:
            line = f"[green]{escape(label)}: {DONE.get(action, action)}{took}[/green]"
            if result.message:
                line += f" [dim]({escape(result.message)})[/dim]"
        elif result.status is ResultStatus.PENDING:
            line = f"[cyan]{escape(label)}: started, still running[/cyan] [dim]({escape(result.message)})[/dim]"
        elif result.status is ResultStatus.FAILED:
            line = f"[bold red]{escape(label)}: failed{took}:[/bold red] {escape(result.message)}"
        else:
            line = f"[yellow]{escape(label)}: {escape(result.message)}[/yellow]"
        self.console.print(line, highlight=False)

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
