"""`fastuner reap`: destroy every deployment past its ttl or idle_ttl, and nothing else.

Meant for a schedule (the CI workflow template runs it), so it needs no dataset files: source hashes are
taken from state. Two sources of truth, used in turn:

- **state**: what is expired is the planner's decision (its reap mode; its docstring states the rule);
  reaped deployments stay recorded as expired until renewed.
- **tags** (SageMaker): every endpoint carries its lifetime as tags, so expired endpoints are found
  with no state at hand (`providers/sagemaker/reaping.py`) and deleted with what belongs to them
  (`providers/sagemaker/endpoint_tree.py`). This runs after the state's reap and catches what the
  state lacks (an endpoint whose apply crashed before its state write, another workspace's), or alone:
  when there is no state for the workspace, or with `--from-tags`, which then neither plans nor needs
  the spec's resources. Whatever a state of the project records about a reaped endpoint is marked
  expired there, under its lock, as the engine marks the state's own reaps; a lock that stays busy
  only skips the record (the next plan sees the lifetime ended all the same).

A protected deployment (`policy: protect`) is never reaped, by either: a reap that would delete one
breaks the policy, and, as any such plan, is refused whole (exit 3) until the address leaves the list.

Wording is views/reap.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape

from fastuner.cli.commands import EXIT_ERROR, EXIT_OK, EXIT_POLICY, _confirm, make_project_plan
from fastuner.cli.project import (
    Project,
    aws_session,
    build_store,
    open_project,
    parse_lock_timeout,
    resolve_workspace,
)
from fastuner.errors import UserError
from fastuner.plan.model import Action, Reason, Violation
from fastuner.plan.status import ResultStatus
from fastuner.providers.sagemaker.reaping import WORKSPACE_TAG
from fastuner.state.model import State, Status


def run_reap(file, var, workspace, *, auto_approve: bool, dry_run: bool, json_out: bool, console: Console,
             clock: Callable[[], datetime], lock_timeout: str | None = None, policy: str | None = None,
             from_tags: bool = False, all_projects: bool = False) -> int:
    from fastuner.views.reap import render_no_state

    from_tags = from_tags or all_projects
    notice = (lambda m: None) if json_out else (lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"))
    project = open_project(file, var, workspace, notice=notice, lock_timeout=lock_timeout, state_only=from_tags)
    by_tags = project.spec.config.provider.sagemaker is not None
    if from_tags and not by_tags:
        raise UserError("--from-tags finds SageMaker endpoints by their tags, and this spec's provider is local",
                        "Local deployments are processes on the machine that applied them: run `fastuner reap` "
                        "there, without --from-tags (it reaps from state).")
    out: dict[str, Any] = {"reaped": []}
    state = project.store.read()
    code = EXIT_OK
    if not from_tags and (state is not None or not by_tags):
        code = _reap_state(project, state, auto_approve=auto_approve, dry_run=dry_run, json_out=json_out,
                           console=console, clock=clock, out=out, policy=policy)
        state = project.store.read()
    elif not from_tags and not json_out:
        render_no_state(project.workspace, project.store.location, console)
    if by_tags and code is not None and code != EXIT_POLICY:
        # after the state's own reap, only what it lacks; with --from-tags, the tags judge everything
        skip = set() if from_tags else _tracked(state)
        code = max(code, _reap_tags(project, skip=skip, all_projects=all_projects, auto_approve=auto_approve,
                                    dry_run=dry_run, json_out=json_out, console=console, clock=clock, out=out,
                                    lock_timeout=lock_timeout, policy=policy))
    code = EXIT_ERROR if code is None else code
    if json_out:
        from fastuner.views.documents import write_document

        write_document("reap", {"dry_run": dry_run, "exit_code": code, **out})
    return code


# --- from state ------------------------------------------------------------------------------------


def _reap_state(project: Project, state: State | None, *, auto_approve: bool, dry_run: bool, json_out: bool,
                console: Console, clock: Callable[[], datetime], out: dict[str, Any],
                policy: str | None) -> int | None:
    """The planner's reap, carried out by the engine. The exit code (EXIT_POLICY: refused, nothing more
    is done), or None when the user declined (nothing more is asked)."""
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

    now = clock()
    plan = make_project_plan(project, destroy=False, replace=[], renew=[], now=now, hash_sources=False, reap=True,
                             policy=policy)
    expired = [c for c in plan.changes if c.action is Action.DELETE]
    if not expired:
        if not json_out:
            render_nothing_to_reap([{"address": c.address, "expires_at": c.expires_at,
                                     "seconds_left": (datetime.fromisoformat(c.expires_at) - now).total_seconds()}
                                    for c in plan.changes], console)
        return EXIT_OK
    if not json_out:
        render_plan(plan.to_dict(), console)
    if plan.violations:
        out["violations"] = [v.to_dict() for v in plan.violations]
        return EXIT_POLICY
    if dry_run:
        out.setdefault("would_reap", []).extend({"source": "state", "address": c.address, "reason": str(c.reason),
                                                 "detail": c.detail} for c in expired)
        return EXIT_OK
    if not auto_approve and not _approved(console, json_out):
        render_reap_cancelled(console)
        return None
    # under --json, stdout holds the one document: the progress lines go to stderr
    talk = Console(stderr=True, no_color=console.no_color, highlight=False, soft_wrap=True) if json_out else console
    with ProgressView(talk, live=False if json_out else None) as view:
        result = apply_plan(plan, project.store, project.provider, spec_dir=project.spec_dir, reporter=view,
                            clock=clock, operation="reap")
    report = []
    for c in expired:
        rs = state.get(c.address) if state else None
        ran = (now - rs.created_at).total_seconds() if rs and rs.created_at else 0.0
        late = (now - rs.expires_at).total_seconds() if rs and rs.expires_at and rs.expires_at < now else 0.0
        done = any(r.address == c.address and r.status is ResultStatus.DONE for r in result.results)
        hourly = float(c.cost.get("hourly_usd", 0.0))
        report.append({"source": "state", "address": c.address, "reaped": done, "reason": str(c.reason),
                       "detail": c.detail, "ran_hours": round(ran / 3600, 2),
                       "past_expiry_hours": round(late / 3600, 2), "hourly_usd_saved": hourly})
        if not json_out and done:
            render_reaped(c.address, ran, c.detail, hourly, console)
    out["reaped"].extend(report)
    if not result.ok:
        failures = [(r.address, r.message) for r in result.results if r.status is not ResultStatus.DONE]
        if json_out:  # stdout holds the one JSON document
            out.setdefault("failures", []).extend({"address": a, "message": m} for a, m in failures)
        else:
            render_reap_failures(failures, console)
        return EXIT_ERROR
    if not json_out:
        render_reap_done(report, console)
    return EXIT_OK


def _approved(console: Console, json_out: bool) -> bool:
    """The user's yes; under --json, whose stdout is one document, there is no question to ask."""
    if json_out:
        raise UserError("reap --json has deployments to destroy and cannot ask for confirmation",
                        "Add --auto-approve to reap them, or --dry-run to list them.")
    return _confirm(console, destroy=False)


# --- from tags -------------------------------------------------------------------------------------


def _reap_tags(project: Project, *, skip: set[str], all_projects: bool, auto_approve: bool, dry_run: bool,
               json_out: bool, console: Console, clock: Callable[[], datetime], out: dict[str, Any],
               lock_timeout: str | None, policy: str | None) -> int:
    """Find the project's (or every project's) expired endpoints by their tags, show them, ask, delete
    each with its tree, and record the expiry in the state of its workspace where one tracks it. One
    that the policy protects refuses them all (EXIT_POLICY), as the state's reap does."""
    from fastuner.cli import runtime
    from fastuner.cli.policy import project_policy
    from fastuner.providers.base import ProviderError
    from fastuner.providers.sagemaker import POLL_ENV
    from fastuner.providers.sagemaker.endpoint_tree import delete_endpoint_tree
    from fastuner.providers.sagemaker.reaping import find_expired
    from fastuner.views.reap import (
        render_reap_cancelled,
        render_tag_reaped,
        render_tag_scan,
        render_tags_done,
        render_tags_refused,
    )

    environ = runtime.current().environ
    config = project.spec.config
    session = aws_session(project.spec, environ)
    now = clock()
    found = find_expired(session, project=None if all_projects else config.project, now=now)
    context = {"current_workspace": project.workspace, "current_project": config.project}
    expired, kept = [], []
    for f in found:
        ep = f.endpoint
        row = {"address": ep.address, "endpoint": ep.name, "workspace": ep.workspace, "project": ep.project,
               **context}
        if ep.name in skip:
            kept.append({**row, "why": "recorded in state, which reaped what had expired"})
        elif f.expiry is not None:
            reason = Reason.DELETE_BECAUSE_IDLE_TTL_EXPIRED if f.expiry.idle else Reason.DELETE_BECAUSE_TTL_EXPIRED
            expired.append(({**row, "reason": str(reason), "detail": f.expiry.detail,
                             "ended": f.expiry.ended.isoformat()}, f))
        else:
            kept.append({**row, "why": _lives_until(f)})
    scan = {"region": session.region, "scope": "every project" if all_projects else f"project {config.project}",
            "found": len(found), "expired": [row for row, _ in expired], "kept": kept}
    out["from_tags"] = {"region": scan["region"], "project": None if all_projects else config.project,
                        "found": len(found), "kept": [_plain(r) for r in kept]}
    if not json_out:
        render_tag_scan(scan, console)
    rules = project_policy(project.spec, policy)
    broken = [Violation("protect", row["address"], "delete", "", rules.protect[row["address"]], "would be destroyed")
              for row, f in expired if f.endpoint.project == config.project and row["address"] in rules.protect]
    if broken:
        out["violations"] = [v.to_dict() for v in broken]
        if not json_out:
            render_tags_refused(out["violations"], rules.to_dict(), console)
        return EXIT_POLICY
    if not expired:
        return EXIT_OK
    if dry_run:
        out.setdefault("would_reap", []).extend({"source": "tags", **_plain(row)} for row, _ in expired)
        return EXIT_OK
    if not auto_approve and not _approved(console, json_out):
        render_reap_cancelled(console)
        return EXIT_ERROR
    poll = float(environ.get(POLL_ENV) or 15.0)
    progress = (lambda _text: None) if json_out else (lambda text: console.print(f"  [dim]{escape(text)}[/dim]"))
    rows = []
    for row, f in expired:
        result = {"source": "tags", **_plain(row), "reaped": False, "recorded_in_state": False,
                  "ran_hours": round((now - f.created).total_seconds() / 3600, 2) if f.created else 0.0,
                  "past_expiry_hours": round(max(0.0, (now - f.expiry.ended).total_seconds()) / 3600, 2),
                  "hourly_usd_saved": 0.0, "deleted": None, "error": None}
        try:
            tree = delete_endpoint_tree(session, f.endpoint.name, tags=f.endpoint.tags, progress=progress, poll=poll)
        except ProviderError as exc:
            result["error"] = str(exc)
            if not json_out:
                console.print(f"[red]{escape(row['address'] or row['endpoint'])}: {escape(str(exc))}[/red]")
            rows.append(result)
            continue
        result.update(reaped=True, deleted=tree.to_dict(), hourly_usd_saved=_hourly(tree, session.region))
        if f.endpoint.project == config.project and f.endpoint.address:
            result["recorded_in_state"], result["state_note"] = _record(project, f, now, lock_timeout)
        if not json_out:
            render_tag_reaped({**row, **result}, console)
        rows.append(result)
    out["reaped"].extend(rows)
    if not json_out and any(r["reaped"] for r in rows):
        render_tags_done(rows, console)
    return EXIT_ERROR if any(r["error"] for r in rows) else EXIT_OK


def _tracked(state: State | None) -> set[str]:
    """The endpoints a state judges itself: those of its deployments that are ready or in flight."""
    if state is None:
        return set()
    return {name for rs in state.resources.values() if rs.kind == "deployment"
            and rs.status in (Status.READY, Status.PENDING) for name in _names(rs.physical_name, rs.outputs)}


def _lives_until(f) -> str:
    ep, parts = f.endpoint, []
    if ep.expires_at is not None:
        parts.append(f"ttl ends {ep.expires_at.isoformat()}")
    if ep.idle_ttl is not None:
        last = f"last invocation {f.last_activity.isoformat()}" if f.last_activity else "no invocation seen yet"
        parts.append(f"idle_ttl {ep.idle_text}, {last}")
    return "; ".join(parts + ([f.note] if f.note else [])) or "no ttl or idle_ttl tag"


def _hourly(tree, region: str) -> float:
    from fastuner.plan.pricing import endpoint_cost

    if not tree.instance_type:
        return 0.0
    return float(endpoint_cost(tree.instance_type, tree.instance_count or 1, None, region=region)
                 .get("hourly_usd", 0.0))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("current_")}


# --- recording in state ----------------------------------------------------------------------------


def _record(project: Project, found, now: datetime, lock_timeout: str | None) -> tuple[bool, str]:
    """Mark the reaped endpoint expired in the state of its workspace, if that state tracks it, under
    the state's lock. (recorded, what to tell about it)."""
    from fastuner.cli import runtime
    from fastuner.errors import DiagnosticsError

    ep = found.endpoint
    environ = runtime.current().environ
    try:
        workspace = resolve_workspace(ep.workspace or "default", environ)
    except UserError:
        return False, f"Not recorded: its {WORKSPACE_TAG} tag {ep.workspace!r} names no workspace."
    store = project.store if workspace == project.workspace else build_store(
        project.spec, workspace, None, parse_lock_timeout(lock_timeout), environ)
    try:
        if store.read() is None:
            return False, ""
        with store.lock("reap"):
            state = store.read()
            if state is None or not mark_reaped(state, ep.address, ep.name, found.expiry.ended, now):
                return False, ""
            store.write(state)
    except DiagnosticsError as exc:  # a lock held elsewhere, a damaged state: the endpoint is gone all the same
        return False, (f"Not recorded in {store.location}: {exc.diagnostics[0].summary}. The next plan there "
                       "finds its lifetime ended all the same.")
    return True, f"Recorded {ep.address} as expired in {store.location}."


def mark_reaped(state: State, address: str, endpoint: str, ended: datetime, now: datetime) -> bool:
    """Record in `state` that `endpoint`, an instance of `address`, was reaped at `now` because its
    lifetime ended at `ended` — as the engine records the planner's reaps: the current instance becomes
    an expired record that keeps the lifetime it ended under (its inputs), so it stays down until
    renewed; a replaced instance waiting for deletion is dropped. False when the state does not know
    that endpoint (it then changes nothing)."""
    rs = state.get(address)
    if rs is None or rs.kind != "deployment":
        return False
    if rs.status in (Status.READY, Status.PENDING) and endpoint in _names(rs.physical_name, rs.outputs):
        old = [d for d in rs.deposed if d.physical_name != endpoint]
        rs.status = Status.EXPIRED
        rs.pending = None
        rs.error = None
        rs.outputs = {"expired_at": now.isoformat(), **({"cost": rs.outputs["cost"]} if "cost" in rs.outputs else {})}
        rs.deposed = old
        rs.updated_at = now
        rs.expires_at = ended
        return True
    left = [d for d in rs.deposed if endpoint not in _names(d.physical_name, d.outputs)]
    if len(left) == len(rs.deposed):
        return False
    rs.deposed = left
    rs.updated_at = now
    return True


def _names(physical_name: str | None, outputs: dict[str, Any]) -> set[str]:
    return {n for n in (physical_name, outputs.get("endpoint_name")) if n}
