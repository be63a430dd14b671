"""What `fastuner apply` and `fastuner destroy` say when they end: the verdict, the resources counted by
what was done to them, what failed or was skipped and why, what is still running, and a line about each
resource created or updated (worded from its recorded outputs by views/resources.py).

Fed plain data: the engine's results as dicts with `ResultStatus` values, and its `ApplyOutcome`; the
CLI turns the same outcome into the exit code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner.plan.status import ApplyOutcome, ResultStatus
from fastuner.views.resources import describe_outputs

COUNTED = ("create", "update", "replace", "delete")


def render_apply_report(report: Mapping[str, Any], console: Console) -> None:
    """`report`: `operation` ("apply" or "destroy"), `outcome` (an `ApplyOutcome`), `results` (address,
    action, status, message, deposed), `bugs` (address, traceback) and `resources` (address, kind and
    recorded outputs of each resource created or updated; empty when no state was written)."""
    results = report["results"]
    operation = report["operation"]
    verb = operation.capitalize()
    for bug in report["bugs"]:
        console.print(f"[bold red]Bug while applying {escape(bug['address'])}[/bold red] — please report it:\n"
                      f"{escape(bug['traceback'])}")
    counts = _done_counts(results)
    failed, skipped, pending, deferred, cancelled = (
        [r for r in results if r["status"] == status] for status in
        (ResultStatus.FAILED, ResultStatus.SKIPPED, ResultStatus.PENDING, ResultStatus.DEFERRED, ResultStatus.CANCELLED))
    line = (f"{counts['delete']} destroyed" if operation == "destroy" else  # as Terraform words a destroy
            f"{counts['create']} created, {counts['update']} updated, {counts['replace']} replaced, "
            f"{counts['delete']} destroyed")
    if report["outcome"] == ApplyOutcome.FAILED:
        console.print(f"\n[bold red]{verb} failed.[/bold red] Resources: {line}; {len(failed)} failed, "
                      f"{len(skipped)} skipped.")
        for r in failed:
            console.print(f"  [red]✗ {escape(r['address'])}[/red]: {escape(r['message'])}")
        for r in skipped:
            console.print(f"  [yellow]- {escape(r['address'])}[/yellow]: {escape(r['message'])}")
        console.print(f"Fix the cause and run `fastuner {operation}` again: completed work is kept in state.")
        return
    if report["outcome"] == ApplyOutcome.INTERRUPTED:
        console.print(f"\n[bold yellow]{verb} interrupted.[/bold yellow] Resources: {line}; {len(cancelled)} not "
                      f"started. State is saved; run `fastuner {operation}` to continue.")
        return
    console.print(f"\n[bold green]{verb} complete![/bold green] Resources: {line}.")
    if pending:
        console.print(f"{len(pending)} still running: " + _addresses(pending)
                      + ". Run `fastuner apply` later to pick up their results"
                      + (f" and carry out what waits on them ({_addresses(deferred)})" if deferred else "") + ".")
    for resource in report["resources"]:
        text = describe_outputs(resource["kind"], resource["outputs"])
        if text:
            console.print(f"  {escape(resource['address'])}: {escape(text)}")


def render_no_changes(operation: str, console: Console) -> None:
    """A saved plan with nothing to do."""
    console.print(f"[bold green]No changes.[/bold green] Nothing to {operation}.")


def render_refresh_complete(recorded: int, console: Console) -> None:
    console.print(f"\n[bold green]Refresh complete![/bold green] Recorded {recorded} change(s) in state; "
                  "nothing was created, updated or destroyed.")


def render_cancelled(operation: str, console: Console) -> None:
    """The confirmation was not "yes"."""
    console.print(f"{operation.capitalize()} cancelled.")


def _done_counts(results: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Resources by what was done to them; an old instance deleted after its replacement is not counted
    again (the replacement is)."""
    done = {r["address"]: r for r in results if r["status"] == ResultStatus.DONE and not r["deposed"]}
    counts = dict.fromkeys(COUNTED, 0)
    for r in done.values():
        counts[r["action"]] = counts.get(r["action"], 0) + 1
    return counts


def _addresses(results: Sequence[Mapping[str, Any]]) -> str:
    return ", ".join(escape(r["address"]) for r in results)
