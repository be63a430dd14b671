"""What `fastuner invoke` prints: an answer, a batch's progress and summary, an evaluation table.

Fed plain values only (answers as the server sent them, summaries as dicts); computes no metric.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

TOP_SCORES = 3


def render_answer(answer: dict[str, Any], console: Console, *, top: int = TOP_SCORES) -> None:
    """A classification answer as its label and top scores; a generation answer as its text."""
    if "label" in answer and isinstance(answer.get("scores"), dict):
        console.print(f"[bold]{escape(str(answer['label']))}[/bold]", highlight=False)
        ranked = sorted(answer["scores"].items(), key=lambda kv: -float(kv[1]))[:top]
        width = max(len(str(k)) for k, _ in ranked) if ranked else 0
        for label, score in ranked:
            console.print(f"  {escape(str(label)):<{width}}  {float(score):6.1%}", highlight=False)
        return
    if "generated_text" in answer:
        console.print(escape(printable(str(answer["generated_text"]))), highlight=False, soft_wrap=True)
        return
    import json

    console.print(escape(json.dumps(answer)), highlight=False)


def printable(text: str) -> str:
    """Model output is untrusted: control characters (an escape sequence would drive the terminal) are
    shown as Python escapes; newlines and tabs stay."""
    return "".join(c if c.isprintable() or c in "\n\t" else repr(c)[1:-1] for c in text)


class BatchProgress:
    """A progress bar on a terminal; otherwise a plain line every `every` seconds and at the end.

    `advance` is called from worker threads.
    """

    def __init__(self, console: Console, total: int, *, label: str = "rows", live: bool | None = None,
                 every: float = 5.0) -> None:
        self.console = console
        self.total = total
        self.label = label
        self.live = console.is_terminal if live is None else live
        self.every = every
        self.ok = self.failed = 0
        self._lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: Any = None
        self._start = self._last = time.monotonic()

    def __enter__(self) -> BatchProgress:
        self._start = self._last = time.monotonic()
        if self.live:
            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("[red]{task.fields[failed]} failed[/red]"), TimeElapsedColumn(),
                                      TimeRemainingColumn(), console=self.console, transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task(escape(self.label), total=self.total, failed=0)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(None, None, None)
            self._progress = None

    def advance(self, ok: int, failed: int) -> None:
        with self._lock:
            self.ok += ok
            self.failed += failed
            done, bad = self.ok + self.failed, self.failed
            now = time.monotonic()
            plain_due = not self.live and (now - self._last >= self.every or done == self.total)
            if plain_due:
                self._last = now
        if self._progress is not None:
            self._progress.update(self._task, completed=done, failed=bad)
        elif plain_due:
            self.console.print(f"{escape(self.label)}: {done}/{self.total} done, {bad} failed "
                               f"({now - self._start:.0f}s)", highlight=False)


def render_batch_summary(summary: dict[str, Any], console: Console) -> None:
    ok, failed = summary["ok"], summary["failed"]
    style = "green" if not failed else "red"
    console.print(f"[bold {style}]{summary['rows']} rows: {ok} ok, {failed} failed[/bold {style}] in "
                  f"{summary['seconds']:.1f}s — {summary['rows_per_s']:.1f} rows/s, "
                  f"{summary['requests_per_s']:.1f} req/s ({summary['requests']} requests)", highlight=False)
    for err in summary.get("first_errors", []):
        console.print(f"  [red]row {err['row']}[/red]: {escape(err['error'])}", highlight=False)
    if summary.get("out"):
        console.print(f"Wrote {escape(summary['out'])}", highlight=False)


def _pct(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


def render_evaluation(result: dict[str, Any], console: Console) -> None:
    """The adapter as served, next to the base model and the training run's own measurement."""
    console.print(f"[bold]{escape(result['adapter'])}[/bold] on the test split of {escape(result['dataset'])} "
                  f"({result['rows']} rows) through {escape(result['deployment'])}", highlight=False)
    table = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
    table.add_column("metric")
    table.add_column("adapter", justify="right")
    base_note = "*" if result["base_source"] == "training" else ""
    table.add_column(f"base model{base_note}", justify="right")
    table.add_column("training run", justify="right")
    for metric in result["metrics"]:
        table.add_row(metric.replace("_", " ").replace("macro f1", "macro-F1"),
                      _pct(result["adapter_metrics"].get(metric)), _pct(result["base_metrics"].get(metric)),
                      _pct(result["training_metrics"].get(metric)))
    console.print(table)
    if base_note:
        console.print("* the base model has no classification head, so the server cannot answer for it: this is "
                      "the training program's measurement of the base with an untrained head "
                      "(metrics.base_test_*).", highlight=False)
    for note in result.get("notes", []):
        console.print(escape(note), highlight=False)
    failed = result.get("failed", {})
    for who, count in failed.items():
        if count:
            console.print(f"[red]{count} {escape(who)} request(s) failed and count as wrong[/red]"
                          + (f" (first: {escape(result['first_errors'][who])})" if result.get("first_errors", {}).get(who) else ""),
                          highlight=False)
