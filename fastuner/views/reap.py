"""What `fastuner reap` tells a person: what expires next when nothing has, what was reaped and what
it saves, and what failed. Fed plain data (the reap plan's changes as dicts and the reap report)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner.views.words import violation_text


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


# --- reaping by tags -----------------------------------------------------------------------------


def render_no_state(workspace: str, location: str, console: Console) -> None:
    console.print(f"No state for workspace {escape(workspace)} ({escape(location)}): looking for expired endpoints "
                  "by their tags instead (fastuner:expires-at, fastuner:idle-ttl).")


def render_tag_scan(scan: dict[str, Any], console: Console) -> None:
    """`scan`: region, scope ("project demo", "every project"), found (a count), expired and kept (rows
    with address, workspace, project, endpoint; expired rows a detail, kept rows what ends them)."""
    where = f"{scan['scope']} in {scan['region']}"
    if not scan["found"]:
        console.print(f"No fastuner endpoint of {escape(where)} by its tags.")
        return
    console.print(f"Found {scan['found']} fastuner endpoint(s) of {escape(where)} by their tags; "
                  f"{len(scan['expired'])} past their ttl or idle_ttl" + (":" if scan["expired"] else "."))
    for row in scan["expired"]:
        console.print(f"  [red]-[/red] {_who(row)}: {escape(row['detail'])}")
    for row in scan["kept"]:
        console.print(f"  [dim]kept[/dim] {_who(row)}: {escape(row['why'])}")


def render_tag_reaped(row: dict[str, Any], console: Console) -> None:
    """One endpoint deleted by its tags: what went, how long it ran, why, what it saves."""
    tree = row["deleted"]
    parts = [f"{len(tree['inference_components'])} inference component(s)"] if tree["inference_components"] else []
    parts += ["the endpoint", f"{len(tree['endpoint_configs'])} endpoint config(s)", f"{len(tree['models'])} model(s)"]
    saving = f"; saves ${row['hourly_usd_saved']:.2f}/h from now on" if row["hourly_usd_saved"] else ""
    console.print(f"Reaped {_who(row)}: ran {hours(row['ran_hours'] * 3600)} ({escape(row['detail'])}); deleted "
                  f"{', '.join(parts)}{saving}.")
    if row.get("state_note"):
        console.print(f"  {escape(row['state_note'])}")


def render_tags_done(rows: list[dict[str, Any]], console: Console) -> None:
    reaped = [r for r in rows if r["reaped"]]
    total = sum(r["hourly_usd_saved"] for r in reaped)
    recorded = sum(1 for r in reaped if r["recorded_in_state"])
    console.print(f"[bold green]Reaped {len(reaped)} endpoint(s) by their tags.[/bold green]"
                  + (f" Saving ${total:.2f}/h." if total else "")
                  + (f" {recorded} recorded as expired in state: they stay down until renewed." if recorded else "")
                  + ((" The others are" if recorded else " They are") + " in no state: an apply of their spec "
                     "creates them anew." if recorded < len(reaped) else ""))


def render_tags_refused(violations: list[dict[str, Any]], policy: dict[str, Any], console: Console) -> None:
    """A reap by tags that would delete a protected deployment: refused whole, as a plan would be."""
    console.print("[bold red]Reaping these breaks the policy:[/bold red] nothing is deleted.")
    for v in violations:
        console.print(f"  - {escape(violation_text(v, policy))}")


def _who(row: dict[str, Any]) -> str:
    """deployment.api (endpoint demo-ep-api-1a2b3c4d, workspace dev, project other)."""
    about = [f"endpoint {row['endpoint']}"]
    if row.get("workspace") and row["workspace"] != row.get("current_workspace"):
        about.append(f"workspace {row['workspace']}")
    if row.get("project") and row["project"] != row.get("current_project"):
        about.append(f"project {row['project']}")
    return f"{escape(row['address'] or '(no address tag)')} ({escape(', '.join(about))})"
