"""The terminal view of a plan (Terraform-like), rendered from the plan's JSON form only."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner.views.words import HEADINGS, SYMBOLS, attribute_rows, cost_line, reason_text, summary_line

STYLES = {"create": "green", "update": "yellow", "replace": "magenta", "delete": "red", "no-op": "dim"}


def render_plan(plan: dict[str, Any], console: Console, *, show_noop: bool = False) -> None:
    if plan["mode"] == "refresh-only":
        _render_drift(plan, console)
        return
    changes = [c for c in plan["changes"] if show_noop or c["action"] != "no-op"
               or c["reason"] == "noop_because_expired"]
    refreshed = plan.get("refresh") or {}
    if refreshed:
        console.print("[bold]Refreshed[/bold] (recorded in state on apply):")
        for address in sorted(refreshed):
            console.print(f"  {escape(address)}: now {escape(str(refreshed[address].get('status')))}")
        console.print()
    if not plan["has_changes"]:
        expired = [c for c in changes if c["reason"] == "noop_because_expired"]
        for c in expired:
            console.print(f"  [dim]# {escape(c['address'])} {escape(reason_text(c))}[/dim]")
        if expired:
            console.print()
        console.print("[bold green]No changes.[/bold green] Your infrastructure matches the configuration.")
        _diagnostics(plan, console)
        return
    console.print("fastuner will perform the following actions:\n")
    for change in changes:
        _render_change(change, console)
    _footer(plan, console)


def _render_change(change: dict[str, Any], console: Console) -> None:
    action = change["action"]
    style = STYLES[action]
    why = reason_text(change)
    deposed = f" (old instance {change['deposed']})" if change.get("deposed") else ""
    head = f"  [bold]# {escape(change['address'])}{escape(deposed)}[/bold] {HEADINGS[action]}"
    if why and action != "no-op":
        head += f" [dim]({escape(why)})[/dim]"
    elif why:
        head = f"  [dim]# {escape(change['address'])} {escape(why)}[/dim]"
    console.print(head)
    if action == "no-op":
        console.print()
        return
    if change.get("blocked"):
        console.print(f"  [bold red]! cannot be applied yet:[/bold red] {escape(change['blocked'])}")
    sym = SYMBOLS[action]
    console.print(f"[{style}]{sym:>3}[/{style}] {change['kind']} \"{escape(change['name'])}\" {{")
    rows = attribute_rows(change)
    width = max((len(r["path"]) for r in rows), default=0)
    for row in rows:
        line = f"      [{STYLES.get(_row_action(row['symbol']), 'white')}]{row['symbol']}[/] {escape(row['path']).ljust(width)} = "
        if row["symbol"] == "~":
            line += f"{escape(row['before'])} -> {escape(row['after'])}"
        elif row["symbol"] == "+":
            line += escape(row["after"])
        else:
            line += escape(row["before"]) + (" -> null" if action != "delete" else "")
        if row["forces"]:
            line += " [red]# forces replacement[/red]"
        console.print(line)
    hidden = 0
    if action in ("update", "replace"):
        hidden = len(_all_paths(change)) - len(rows)
    if hidden > 0:
        console.print(f"        [dim]# ({hidden} unchanged attributes hidden)[/dim]")
    for path in change.get("after_unknown") or []:
        console.print(f"      [dim]+ {escape(path)} = (known after apply)[/dim]")
    if change.get("expires_at") and action in ("create", "update", "replace"):
        console.print(f"      [dim]# expires at {escape(change['expires_at'])}[/dim]")
    cost = change.get("cost") or {}
    if cost.get("note"):
        console.print(f"      [dim]# cost: {escape(_cost_text(cost))}[/dim]")
    console.print("    }\n")


def _row_action(symbol: str) -> str:
    return {"+": "create", "~": "update", "-": "delete"}.get(symbol, "no-op")


def _all_paths(change: dict[str, Any]) -> set[str]:
    from fastuner.plan.kinds import leaf_paths

    return {p for p, _ in leaf_paths(change.get("after") or {})} | {p for p, _ in leaf_paths(change.get("before") or {})}


def _cost_text(cost: dict[str, Any]) -> str:
    parts = []
    if "hourly_usd" in cost:
        parts.append(f"${cost['hourly_usd']:.2f}/h")
    if "max_one_time_usd" in cost:
        parts.append(f"at most ${cost['max_one_time_usd']:.2f}")
    return ", ".join(parts) + (f" ({cost['note']})" if cost.get("note") else "")


def _footer(plan: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]{summary_line(plan['summary'], plan['mode'])}[/bold]")
    line = cost_line(plan.get("cost") or {})
    if line:
        console.print(escape(line))
    if not plan["can_apply"]:
        blocked = [c["address"] for c in plan["changes"] if c.get("blocked") and c["action"] != "no-op"]
        console.print(f"[bold red]This plan cannot be applied yet:[/bold red] {escape(', '.join(blocked))} "
                      f"need what the {escape(plan['provider'])} provider does not support yet.")
    _diagnostics(plan, console)


def _diagnostics(plan: dict[str, Any], console: Console) -> None:
    for d in plan.get("diagnostics") or []:
        console.print(f"[yellow]Warning:[/yellow] {escape(d['summary'])}")


def _render_drift(plan: dict[str, Any], console: Console) -> None:
    """A --refresh-only plan: what changed outside fastuner, to record in state; no action at all."""
    drift = plan.get("refresh") or {}
    if not drift:
        console.print("[bold green]No changes.[/bold green] The state matches what exists: nothing changed "
                      "outside fastuner.")
    else:
        console.print("Changed outside fastuner (or work finished or failed since the last apply):\n")
        for address in sorted(drift):
            rec = drift[address]
            console.print(f"  [bold]# {escape(address)}:[/bold] {escape(rec.get('detail') or 'now ' + str(rec.get('status')))}")
        console.print(f"\n[bold]Refresh-only: {len(drift)} to record in state.[/bold] Nothing will be created, "
                      "updated or destroyed.")
    _diagnostics(plan, console)
