"""What `fastuner reap` tells a person: what expires next when nothing has, what was reaped and what
it saves, and what failed. Fed plain data (the reap plan's changes as dicts and the reap report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def render_nothing_to_reap(upcoming: list[dict[str, Any]], console: Console) -> None:
    """`upcoming`: address, expires_at (ISO) and seconds_left of each running resource with an expiry."""
    console.print("Nothing to reap: no deployment is past its ttl or idle_ttl.")
    for row in upcoming:
        console.print(f"  {escape(row['address'])} expires in {hours(row['seconds_left'])} ({row['expires_at']})")


def render_reaped(address: str, ran_seconds: float, detail: str, hourly_usd: float, console: Console) -> None:
    """One reaped resource: how long it ran, why it ended, what deleting it saves."""
    saving = f"; saves ${hourly_usd:.2f}/h from now on" if hourly_usd else "; its server and memory are freed"
    console.print(f"Reaped {escape(address)}: ran {hours(ran_seconds)} ({escape(detail)}){saving}.")


def render_reap_failures(failures: list[tuple[str, str]], console: Console) -> None:
    for address, message in failures:
        console.print(f"[red]{escape(address)}: {escape(message)}[/red]")


def render_reap_done(report: list[dict[str, Any]], console: Console) -> None:
    total = sum(x["hourly_usd_saved"] for x in report if x["reaped"])
    console.print(f"[bold green]Reaped {sum(x['reaped'] for x in report)} deployment(s).[/bold green]"
                  + (f" Saving ${total:.2f}/h." if total else "")
                  + " They stay down until renewed: fastuner apply --renew ADDRESS, or a new ttl.")


def render_reap_cancelled(console: Console) -> None:
    console.print("Reap cancelled.")
