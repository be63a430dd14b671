"""Live progress of apply: one line per finished operation, and a live panel of running ones with
elapsed time and their latest progress text (step, loss, ETA). Plain lines when not a terminal (CI)."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.text import Text

VERBS = {"create": "Creating", "update": "Updating", "replace": "Replacing", "delete": "Destroying"}
DONE = {"create": "Created", "update": "Updated", "replace": "Replaced", "delete": "Destroyed"}


def _fmt_elapsed(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class ProgressView:
    """Implements the engine's Reporter protocol (structurally: views do not import the engine)."""

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live_enabled = console.is_terminal if live is None else live
        self._running: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._last_plain: dict[str, float] = {}

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
                f"[dim]{_fmt_elapsed(now - info['start'])} elapsed[/dim]"
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
            if info is not None:
                info["text"] = text
                elapsed = time.monotonic() - info["start"]
        if not self.live_enabled and info is not None:
            last = self._last_plain.get(address, 0.0)
            if time.monotonic() - last >= 10:  # keep CI logs readable
                self._last_plain[address] = time.monotonic()
                self.console.print(f"{escape(address)}: still {VERBS.get(info['action'], '').lower()}… "
                                   f"[{_fmt_elapsed(elapsed)} elapsed] {escape(text)}", highlight=False)

    def finished(self, change: Any, result: Any) -> None:
        with self._lock:
            self._running.pop(change.address, None)
        action = str(change.action)
        label = change.address + (f" (old {result.deposed})" if getattr(result, "deposed", None) else "")
        took = f" after {_fmt_elapsed(result.elapsed)}" if result.elapsed >= 1 else ""
        if result.status == "done":
            line = f"[green]{escape(label)}: {DONE.get(action, action)}{took}[/green]"
            if result.message:
                line += f" [dim]({escape(result.message)})[/dim]"
        elif result.status == "pending":
            line = f"[cyan]{escape(label)}: started, still running[/cyan] [dim]({escape(result.message)})[/dim]"
        elif result.status == "failed":
            line = f"[bold red]{escape(label)}: failed{took}:[/bold red] {escape(result.message)}"
        else:
            line = f"[yellow]{escape(label)}: {escape(result.message)}[/yellow]"
        self.console.print(line, highlight=False)

    def notice(self, text: str) -> None:
        self.console.print(f"[yellow]{escape(text)}[/yellow]", highlight=False)
