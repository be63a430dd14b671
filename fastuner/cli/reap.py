"""`fastuner reap`: destroy every deployment past its ttl or idle_ttl, and nothing else.

Meant for a schedule (the CI workflow template runs it hourly), so it needs no dataset files: source
hashes are taken from state. What is expired is the planner's decision (its reap mode; its docstring
states the rule); reaped deployments stay recorded as expired until renewed. Wording is views/reap.py's.
A protected deployment (`policy: protect`) is never reaped: a reap that would delete one breaks the
policy, and, as any such plan, is refused whole (exit 3) until the address leaves the list.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime

from rich.console import Console
from rich.markup import escape

from fastuner.cli.commands import EXIT_ERROR, EXIT_OK, EXIT_POLICY, _confirm, make_project_plan
from fastuner.cli.project import open_project
from fastuner.plan.model import Action
from fastuner.plan.status import ResultStatus


def run_reap(file, var, workspace, *, auto_approve: bool, dry_run: bool, json_out: bool, console: Console,
             clock: Callable[[], datetime], lock_timeout: str | None = None, policy: str | None = None) -> int:
    from fastuner.engine.apply import apply_plan
    from fastuner.views.progress import ProgressView
    from fastuner.views.reap import (
        render_nothing_to_reap,
        render_reap_cancelled,
        render_reap_done,
        render_reap_failures,
        render_reaped,
    )
    from fastuner.views.terminal import render_plan

    project = open_project(file, var, workspace, notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"),
                           lock_timeout=lock_timeout)
    now = clock()
    plan = make_project_plan(project, destroy=False, replace=[], renew=[], now=now, hash_sources=False, reap=True,
                             policy=policy)
    expired = [c for c in plan.changes if c.action is Action.DELETE]
    state = project.store.read()
    if not expired:
        if json_out:
            sys.stdout.write(json.dumps({"reaped": []}) + "\n")
            return EXIT_OK
        render_nothing_to_reap([{"address": c.address, "expires_at": c.expires_at,
                                 "seconds_left": (datetime.fromisoformat(c.expires_at) - now).total_seconds()}
                                for c in plan.changes], console)
        return EXIT_OK
    if json_out and plan.violations:
        sys.stdout.write(json.dumps({"reaped": [], "violations": [v.to_dict() for v in plan.violations]},
                                    indent=2) + "\n")
    if not json_out:
        render_plan(plan.to_dict(), console)
    if plan.violations:
        return EXIT_POLICY
    if dry_run:
        return EXIT_OK
    if not auto_approve and not _confirm(console, destroy=False):
        render_reap_cancelled(console)
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
            render_reaped(c.address, ran, c.detail, hourly, console)
    if json_out:
        sys.stdout.write(json.dumps({"reaped": report}, indent=2) + "\n")
    if not result.ok:
        render_reap_failures([(r.address, r.message) for r in result.results if r.status is not ResultStatus.DONE],
                             console)
        return EXIT_ERROR
    if not json_out:
        render_reap_done(report, console)
    return EXIT_OK
