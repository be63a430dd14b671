"""`fastuner cost`: spent vs estimated per resource and in total, from the report's dict (plan/spend.py)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def render_cost(report: dict[str, Any], console: Console) -> None:
    rows = report["resources"]
    if not rows:
        console.print("Nothing billed recorded in state yet." if report["provider"] != "local"
                      else "The local provider runs on this machine: it bills nothing ($0).")
        return
    table = Table(title=f"What {escape(report['project'])} ({escape(report['workspace'])}) cost", title_justify="left")
    for name, justify in (("Resource", "left"), ("Instance", "left"), ("Estimated", "right"), ("Spent", "right"),
                          ("Error", "right"), ("Billed", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in rows:
        resource = r["address"] + (f" (earlier: {r['physical_name']})" if r["earlier"] else "")
        estimate = _usd(r["estimate_usd"]) + (" (bound)" if r["estimate_is_bound"] and r["estimate_usd"] else "")
        spent = _usd(r["spent_usd"]) + (" so far" if r["running"] else "")
        if r.get("spot_savings"):
            spent += f" (spot −{r['spot_savings']:.0%})"
        table.add_row(escape(resource), escape(r["instance_type"] or "—"), estimate, spent, _pct(r["error"]),
                      _duration(r["billed_seconds"]))
    total = report["total"]
    table.add_row("Total", "", _usd(total["estimate_usd"]) if total["compared"] else "—", _usd(total["spent_usd"]),
                  _pct(total["error"]), "", style="bold")
    console.print(table)
    for note in report["notes"]:
        console.print(escape(note), style="dim")


def _usd(value: float | None) -> str:
    return "—" if value is None else f"${value:,.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:+.0%}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"
