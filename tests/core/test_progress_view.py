"""apply's live output without a terminal (CI logs): every new progress text at once, each once."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from fastuner.plan.status import ResultStatus
from fastuner.views.progress import ProgressView


def plain_view() -> tuple[ProgressView, io.StringIO]:
    out = io.StringIO()
    return ProgressView(Console(file=out, force_terminal=False, width=200)), out


def test_each_new_progress_text_is_printed_at_once_and_only_once() -> None:
    view, out = plain_view()
    change = SimpleNamespace(address="adapter.a", action="create")
    with view:
        view.started(change)
        for text in ("loading the base model m", "step 1/3 · loss 1.2000 · ETA 2s", "step 1/3 · loss 1.2000 · ETA 2s",
                     "step 2/3 · loss 1.1000 · ETA 1s", "step 3/3 · loss 1.0000"):
            view.progress("adapter.a", text)
        view.finished(change, SimpleNamespace(status=ResultStatus.DONE, elapsed=167.2, message="", deposed=None))
    lines = out.getvalue().splitlines()
    assert lines[0] == "adapter.a: Creating…"
    assert [line.split("] ", 1)[1] for line in lines[1:-1]] == [
        "loading the base model m", "step 1/3 · loss 1.2000 · ETA 2s", "step 2/3 · loss 1.1000 · ETA 1s",
        "step 3/3 · loss 1.0000"]
    assert all(line.startswith("adapter.a: still creating… [0s elapsed] ") for line in lines[1:-1])
    assert lines[-1] == "adapter.a: Created after 2m47s"


def test_progress_of_an_operation_not_running_is_ignored() -> None:
    view, out = plain_view()
    view.progress("adapter.gone", "step 1/3")
    assert out.getvalue() == ""
