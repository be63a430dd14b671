"""`fastuner reap`: destroy every deployment past its ttl or idle_ttl, and nothing else.

Meant for a schedule (the CI workflow template runs it hourly), so it needs no dataset files: source
hashes are taken from state. What is expired is the planner's decision (its docstring states the rule);
reaped deployments stay recorded as expired until renewed.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.markup import escape

from fastuner.cli.commands import EXIT_ERROR, EXIT_OK, _confirm, make_project_plan
from fastuner.cli.project import open_project
from fastuner.plan.model import Reason
from fastuner.plan.status import ResultStatus
from fastuner.state.model import Status

EXPIRY = (Reason.DELETE_BECAUSE_TTL_EXPIRED, Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED)


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def run_reap(file, var, workspace, *, auto_approve: bool, dry_run: bool, json_out: bool, console: Console,
             clock: Callable[[], datetime], lock_timeout: str | None = None) -> int:
    from fastuner.engine.apply import apply_plan
    from fastuner.views.progress import ProgressView
    from fastuner.views.terminal import render_plan

    project = open_project(file, var, workspace, notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"),
                           lock_timeout=lock_timeout)
    now = clock()
    plan = make_project_plan(project, destroy=False, replace=[], renew=[], now=now, hash_sources=False)
    expired = tuple(c for c in plan.changes if c.reason in EXPIRY)
    state = project.store.read()
    if not expired:
        if json_out:
            sys.stdout.write(json.dumps({"reaped": []}) + "\n")
            return EXIT_OK
        console.print("Nothing to reap: no deployment is past its ttl or idle_ttl.")
        for c in plan.changes:
            if c.kind == "deployment" and c.expires_at and state and (rs := state.get(c.address)) \
                    and rs.status is Status.READY:
                left = datetime.fromisoformat(c.expires_at) - now
                console.print(f"  {escape(c.address)} expires in {_hours(left.total_seconds())} ({c.expires_at})")
        return EXIT_OK
    keep = {c.address for c in expired}
    plan = dataclasses.replace(plan, changes=expired, waves=(), refresh={},
                               destroy_waves=tuple(tuple(a for a in w if a in keep) for w in plan.destroy_waves))
    if not json_out:
        render_plan(plan.to_dict(), console)
    if dry_run:
        return EXIT_OK
    if not auto_approve and not _confirm(console, destroy=False):
        console.print("Reap cancelled.")
        return EXIT_ERROR
    with ProgressView(console, live=False if json_out else None) as view:
        result = apply_plan(plan, project.store, project.provider, spec_dir=project.spec_dir, reporter=view,
                            clock=clock, operation="reap")
    report = []
    for c in expired:
        rs = state.get(c.address) if state else None
        ran = (now - rs.created_at).total_seconds() if rs and rs.created_at else 0.0
        late = (now - rs.expires_at).total_seconds() if rs and rs.expires_at and rs.expires_at < now else 0.0
        done = any(r.address == c.address and r.status is ResultStatus.DONE for r in result.results)
        hourly = float(c.cost.get("hourly_usd", 0.0))
        report.append({"address": c.address, "reaped": done, "reason": str(c.reason), "detail": c.detail,
                       "ran_hours": round(ran / 3600, 2), "past_expiry_hours": round(late / 3600, 2),
                       "hourly_usd_saved": hourly})
        if not json_out and done:
            saving = f"; saves ${hourly:.2f}/h from now on" if hourly else "; its server and memory are freed"
            console.print(f"Reaped {escape(c.address)}: ran {_hours(ran)} ({escape(c.detail)}){saving}.")
    if json_out:
        sys.stdout.write(json.dumps({"reaped": report}, indent=2) + "\n")
    if not result.ok:
        for r in result.results:
            if r.status is not ResultStatus.DONE:
                console.print(f"[red]{escape(r.address)}: {escape(r.message)}[/red]")
        return EXIT_ERROR
    total = sum(x["hourly_usd_saved"] for x in report if x["reaped"])
    if not json_out:
        console.print(f"[bold green]Reaped {sum(x['reaped'] for x in report)} deployment(s).[/bold green]"
                      + (f" Saving ${total:.2f}/h." if total else "")
                      + " They stay down until renewed: fastuner apply --renew ADDRESS, or a new ttl.")
    return EXIT_OK
