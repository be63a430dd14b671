"""What was spent, beside what the plan estimated: the report `fastuner cost` prints (and its JSON).

It reads only state: apply records in each resource's `outputs.cost` the plan's estimate and, for a
training job, what it was billed (`BillableTimeInSeconds` × the price the plan used: spot savings
included, since SageMaker bills spot jobs only for the discounted seconds). An endpoint bills while it
exists: from its creation to its expiry (`outputs.expired_at`) or to `now`, × its hourly price; a
running one is marked so, and its error is left out until it ends. Earlier trained versions of an
adapter (its history) were paid for too and are listed.

The error is (estimate − spent) ÷ spent: positive when the plan over-estimated. The estimate prices
on-demand time, so a spot job is compared by its on-demand equivalent (spent + what spot saved). A
local provider bills nothing: the report says so, with every figure $0.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastuner.state.model import ResourceState, State

FORMAT_VERSION = 1


def cost_report(state: State, provider: str, now: datetime) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    for address in sorted(state.resources):
        rs = state.resources[address]
        rows.extend(_rows(rs, now))
    if provider == "local":
        rows = [{**r, "estimate_usd": 0.0, "spent_usd": 0.0, "compared_usd": 0.0, "error": None} for r in rows]
    known = [r for r in rows if r["spent_usd"] is not None and r["estimate_usd"] is not None and not r["running"]]
    spent = sum(r["spent_usd"] or 0.0 for r in rows)
    compared_spent = sum(r["compared_usd"] for r in known)
    compared_estimate = sum(r["estimate_usd"] for r in known)
    notes = []
    if provider == "local":
        notes.append("The local provider runs on this machine: it bills nothing ($0).")
    if any(r["running"] for r in rows):
        notes.append("Running endpoints: spent so far (creation to now); compared once they end.")
    if known:
        notes.append(f"Total error over the {len(known)} run{'s' * (len(known) > 1)} with both figures; a spot "
                     "job is compared by its on-demand equivalent (the estimate prices on-demand time, spot's "
                     "saving is shown apart).")
    if any(r["spent_usd"] is None for r in rows):
        notes.append("Jobs without billed time yet (still running, or applied before fastuner recorded costs) "
                     "show no spend.")
    return {
        "format_version": FORMAT_VERSION, "kind": "cost", "project": state.project, "workspace": state.workspace,
        "provider": provider, "generated_at": now.isoformat(), "currency": "USD",
        "resources": rows,
        "total": {"spent_usd": round(spent, 2), "estimate_usd": round(compared_estimate, 2),
                  "compared_spent_usd": round(compared_spent, 2),
                  "error": _error(compared_estimate, compared_spent), "compared": len(known)},
        "notes": notes,
    }


def _rows(rs: ResourceState, now: datetime) -> list[dict[str, Any]]:
    out = []
    if rs.kind == "adapter":
        for old in rs.history:
            if isinstance(old.outputs.get("cost"), dict):
                out.append(_job_row(f"{rs.address}", old.physical_name, old.outputs["cost"], earlier=True))
        cost = rs.outputs.get("cost")
        if isinstance(cost, dict):
            out.append(_job_row(rs.address, rs.physical_name, cost, earlier=False))
    elif rs.kind == "deployment":
        cost = rs.outputs.get("cost")
        row = _endpoint_row(rs, cost if isinstance(cost, dict) else None, now)
        if row is not None:
            out.append(row)
    return out


def _job_row(address: str, physical_name: str | None, cost: dict[str, Any], *, earlier: bool) -> dict[str, Any]:
    spent = cost.get("spent_usd")
    estimate = cost.get("estimate_usd", cost.get("max_one_time_usd"))
    # the estimate is of on-demand time: a spot job is compared with what its time would cost on demand
    compared = spent + (cost.get("spot_saved_usd") or 0.0) if spent is not None else None
    return {
        "address": address, "kind": "adapter", "physical_name": physical_name, "earlier": earlier,
        "instance_type": cost.get("instance_type"), "usd_per_hour": cost.get("usd_per_hour"),
        "estimate_usd": estimate, "estimate_is_bound": "estimate_usd" not in cost,
        "estimate_seconds": cost.get("estimate_seconds"), "billed_seconds": cost.get("billed_seconds"),
        "spent_usd": spent, "spot_savings": cost.get("spot_savings"), "spot_saved_usd": cost.get("spot_saved_usd"),
        "running": False, "compared_usd": compared,
        "error": _error(estimate, compared),
    }


def _endpoint_row(rs: ResourceState, cost: dict[str, Any] | None, now: datetime) -> dict[str, Any] | None:
    if cost is None or cost.get("hourly_usd") is None or rs.created_at is None:
        return None
    ended = rs.outputs.get("expired_at")
    end = datetime.fromisoformat(ended) if isinstance(ended, str) else now
    hours = max(0.0, (end - rs.created_at).total_seconds() / 3600)
    spent = round(hours * float(cost["hourly_usd"]), 4)
    estimate = cost.get("estimate_usd")
    running = ended is None
    return {
        "address": rs.address, "kind": "deployment", "physical_name": rs.physical_name, "earlier": False,
        "instance_type": cost.get("instance_type"), "usd_per_hour": cost.get("hourly_usd"),
        "estimate_usd": estimate, "estimate_is_bound": False, "estimate_seconds": None,
        "billed_seconds": round(hours * 3600), "spent_usd": spent, "spot_savings": None, "spot_saved_usd": None,
        "running": running, "compared_usd": spent,
        "error": None if running else _error(estimate, spent),
    }


def _error(estimate: float | None, spent: float | None) -> float | None:
    if estimate is None or spent is None or spent <= 0:
        return None
    return round((estimate - spent) / spent, 4)
