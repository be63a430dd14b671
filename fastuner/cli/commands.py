"""validate, plan, show, apply and destroy: each parses nothing itself, wires the project, calls the
engine, hands the result to a view and returns an exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

from fastuner.cli.project import Project, open_project
from fastuner.errors import Diagnostic, DiagnosticsError, Severity, UserError
from fastuner.plan.status import ApplyOutcome, ResultStatus

if TYPE_CHECKING:
    from fastuner.graph import Graph

EXIT_OK, EXIT_ERROR, EXIT_CHANGES, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_POLICY = 3  # the plan breaks the spec's or the policy file's guard-rails: nothing is applied


def _checked(project: Project, *, local_inputs: bool = True) -> tuple[Graph, list[Diagnostic]]:
    """Graph and cross-resource checks, and (with `local_inputs`) the provider's checks of what this
    machine must have to apply (base models); errors raise. The graph (built once, for the planner
    too) and the warnings are returned."""
    from fastuner.config.checks import check_spec
    from fastuner.graph import build_graph

    graph = build_graph(project.spec)
    diags = check_spec(project.spec) + (project.provider.checks() if local_inputs else [])
    errors = [d for d in diags if d.severity is Severity.ERROR]
    if errors:
        raise DiagnosticsError(errors)
    return graph, diags


def _check_addresses(project: Project, addresses: list[str], flag: str, state=None) -> None:
    from fastuner.config.kinds import resources

    known = set(resources(project.spec.config)) | (set(state.resources) if state is not None else set())
    bad = [a for a in addresses if a not in known]
    if bad:
        raise UserError(f"{flag} {bad[0]}: no such resource", f"Known addresses: {', '.join(sorted(known)) or 'none'}.")


# --- validate ------------------------------------------------------------------------------------


def run_validate(file, var, workspace, console: Console, json_out: bool) -> int:
    from fastuner.views.diagnostics import render_diagnostics

    project = open_project(file, var, workspace)
    _, warnings = _checked(project)
    from fastuner.engine.refresh import dataset_sources
    from fastuner.providers.datasets import scan_inputs
    from fastuner.views.resources import describe_figures

    dataset_sources(project.spec)  # every file exists (errors point at its `path:`)
    reports, errors = [], []
    for name, ds in project.spec.config.datasets.items():
        try:
            reports.append((name, scan_inputs(project.spec_dir, ds.model_dump(mode="json"), f"dataset.{name}")))
        except DiagnosticsError as exc:
            errors.extend(exc.diagnostics)
    if errors:
        raise DiagnosticsError(errors)
    for _, scan in reports:
        warnings.extend(scan.warnings)
    if json_out:
        from fastuner.views.documents import write_document

        warnings = [project.spec.sensitive.mask_diagnostic(w) for w in warnings]
        config = project.spec.config
        write_document("validation", {
            "valid": True, "spec_file": str(project.spec.file), "project": config.project,
            "resources": {"datasets": len(config.datasets), "adapters": len(config.adapters),
                          "deployments": len(config.deployments)},
            "warnings": [w.to_dict() for w in warnings], "datasets": {n: s.to_dict() for n, s in reports}})
        return EXIT_OK
    render_diagnostics([project.spec.sensitive.mask_diagnostic(w) for w in warnings], console)
    config = project.spec.config
    console.print(f"[bold green]Success![/bold green] {escape(project.spec.file.name)} is valid: "
                  f"{len(config.datasets)} dataset(s), {len(config.adapters)} adapter(s), "
                  f"{len(config.deployments)} deployment(s).")
    for name, scan in reports:
        text = describe_figures(scan.counts.to_dict(), scan.split_rows, scan.labels)
        console.print(f"  dataset.{escape(name)}: {escape(text)}")
    return EXIT_OK


# --- plan ------------------------------------------------------------------------------------------


def make_project_plan(project: Project, *, destroy: bool, replace: list[str], renew: list[str], now: datetime,
                      hash_sources: bool = True, target: list[str] = (), refresh_only: bool = False,
                      reap: bool = False, policy: str | None = None):
    """The plan, checked against the spec's guard-rails and those of the policy file `policy` names
    (else FASTUNER_POLICY's): read before anything else, so that a bad file fails first."""
    from fastuner.cli.policy import project_policy
    from fastuner.engine.refresh import refresh
    from fastuner.plan.planner import make_plan
    from fastuner.state.model import empty_state

    if refresh_only and (destroy or replace or renew):
        raise UserError("--refresh-only records what exists; it cannot be combined with --destroy, --replace "
                        "or --renew")
    rules = project_policy(project.spec, policy)
    graph, warnings = _checked(project, local_inputs=hash_sources and not destroy)  # reap and destroy need neither
    state = project.store.read() or empty_state(project.spec.config.project, project.workspace)
    _check_addresses(project, replace, "--replace")
    _check_addresses(project, renew, "--renew", state)
    _check_addresses(project, list(target), "--target", state)
    observed = refresh(project.spec if not destroy else None, state, project.provider, hash_sources=hash_sources)
    if hash_sources and not destroy and not refresh_only:
        observed = dataclasses.replace(observed, dataset_figures=changed_dataset_figures(project, state, observed))
    plan = make_plan(project.spec, state, observed, now, destroy=destroy, replace=replace, renew=renew,
                     target=target, refresh_only=refresh_only, reap=reap, graph=graph, policy=rules)
    hidden = project.spec.sensitive
    return dataclasses.replace(plan, diagnostics=(*(hidden.mask_diagnostic(w).to_dict() for w in warnings),
                                                  *plan.diagnostics))


def changed_dataset_figures(project: Project, state, observed) -> dict[str, dict]:
    """The figures (rows, labels) of each dataset file that changed since state recorded it, for the
    plan to show what the new version changes (plan/datadiff.py). Only changed files are read again: a
    plan with nothing new scans nothing. A file with errors gets `error` (apply will report them)."""
    from fastuner.plan.datadiff import figures_of
    from fastuner.providers.datasets import scan_inputs

    out: dict[str, dict] = {}
    for name, ds in project.spec.config.datasets.items():
        rs = state.get(f"dataset.{name}")
        if rs is None or rs.inputs.get("source_sha256") in (None, observed.dataset_sources.get(name)):
            continue
        try:
            scan = scan_inputs(project.spec_dir, ds.model_dump(mode="json"), f"dataset.{name}")
        except DiagnosticsError as exc:
            out[name] = {"error": f"the new file has errors ({exc.diagnostics[0].summary}); "
                                  "`fastuner validate` lists them"}
            continue
        out[name] = figures_of(scan.counts.to_dict(), scan.labels) or {}
    return out


def write_plan_file(plan, out: str) -> Path:
    from fastuner.state.local import write_private

    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, (json.dumps(plan.to_dict(), indent=2) + "\n").encode("utf-8"))  # as private as the state
    return path


def run_plan(file, var, workspace, *, out, detailed_exitcode, destroy, replace, renew, json_out,
             console: Console, clock: Callable[[], datetime], target: list[str] = (),
             refresh_only: bool = False, policy: str | None = None) -> int:
    """Exit 3 (`EXIT_POLICY`) when the plan breaks the policy, whatever else; the plan is still shown
    and saved (a pull request comment says what breaks it), and apply refuses it."""
    from fastuner.views.terminal import render_plan

    project = open_project(file, var, workspace)
    plan = make_project_plan(project, destroy=destroy, replace=replace, renew=renew, now=clock(), target=target,
                             refresh_only=refresh_only, policy=policy)
    data = plan.to_dict()
    if out:
        write_plan_file(plan, out)
    if json_out:
        from fastuner.views.documents import write_document

        write_document("plan", data)
    else:
        render_plan(data, console)
        if out:
            console.print(f"\nSaved the plan to: {escape(out)}")
        if out and (plan.has_changes or plan.refresh) and not plan.violations:
            console.print(f"To carry out exactly these actions, run:\n  fastuner apply {escape(out)}")
    if plan.violations:
        return EXIT_POLICY
    if detailed_exitcode and plan.has_changes:
        return EXIT_CHANGES
    return EXIT_OK


# --- show ------------------------------------------------------------------------------------------


def load_plan_file(path: str):
    from fastuner.plan.model import Plan

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"plan file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not a fastuner plan (invalid JSON: {exc})") from None
    try:
        return Plan.from_dict(data)
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path} is not a usable fastuner plan: {exc}",
                        "Create it with `fastuner plan --out FILE` using this version of fastuner.") from None


def run_show(planfile, file, var, workspace, *, json_out, markdown, console: Console, since: str | None = None,
             clock: Callable[[], datetime] | None = None) -> int:
    """A saved plan, a resource in state (an address that is not a file: as `state show`, and for a
    deployment its metrics), or the state overview."""
    from fastuner.cli.show import is_address, run_show_resource

    if planfile is not None and is_address(planfile):
        if markdown:
            raise UserError("--markdown renders a saved plan, not a resource")
        return run_show_resource(planfile, file, var, workspace, json_out=json_out, console=console, since=since,
                                 clock=clock)
    if since is not None:
        raise UserError("--since goes with a deployment's address (fastuner show deployment.NAME --since 3h)")
    if planfile is None:
        from fastuner.cli.state_commands import run_state_overview

        return run_state_overview(file, var, workspace, console, json_out)
    data = load_plan_file(planfile).to_dict()
    if json_out:
        from fastuner.views.documents import write_document

        write_document("plan", data)
    elif markdown:
        from fastuner.views.markdown import render_markdown

        sys.stdout.write(render_markdown(data))
    else:
        from fastuner.views.terminal import render_plan

        render_plan(data, console)
    return EXIT_OK


# --- apply / destroy -------------------------------------------------------------------------------


def _confirm(console: Console, destroy: bool) -> bool:
    if not sys.stdin.isatty():
        raise UserError("confirmation needed, but the input is not a terminal",
                        "Review the plan and re-run with --auto-approve, or save it with "
                        "`fastuner plan --out plan.json` and run `fastuner apply plan.json`.")
    what = "destroy all resources" if destroy else "perform these actions"
    console.print(f"\n[bold]Do you want to {what}?[/bold]\n  Only 'yes' will be accepted to approve.\n")
    try:
        answer = input("  Enter a value: ")
    except EOFError:
        answer = ""
    return answer.strip() == "yes"


class _Interrupts:
    """First SIGINT/SIGTERM: stop scheduling, let in-flight operations save state. Second: exit now —
    state already records every operation in flight as pending, and the next run reconciles it."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.cancel = threading.Event()
        self._old: dict[int, object] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.cancel.is_set():
            self.console.print("\n[bold red]Exiting now.[/bold red] Operations in flight are recorded as "
                               "pending in state; the next plan or apply picks them up.")
            os._exit(EXIT_INTERRUPTED)
        self.cancel.set()
        self.console.print("\n[bold yellow]Interrupt received.[/bold yellow] No new operations will start; "
                           "waiting for the running ones to save their state. Press Ctrl-C again to exit now.")


def run_apply(planfile, file, var, workspace, *, auto_approve, parallelism, wait, replace, renew, destroy,
              console: Console, clock: Callable[[], datetime], target: list[str] = (),
              refresh_only: bool = False, lock_timeout: str | None = None, policy: str | None = None) -> int:
    """A plan that breaks the policy is shown and refused with exit 3 before anything is asked or done;
    a saved plan is checked again against the guard-rails as they are now (they may have tightened)."""
    from fastuner.engine.apply import StalePlanError, apply_plan
    from fastuner.views.apply import render_cancelled, render_no_changes, render_refresh_complete
    from fastuner.views.progress import ProgressView
    from fastuner.views.terminal import render_plan, render_violations

    project = open_project(file, var, workspace, notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"),
                           lock_timeout=lock_timeout)

    def plan_shown():
        """A new plan, shown; its exit code instead where it stops here (a policy violation, no changes)."""
        fresh = make_project_plan(project, destroy=destroy, replace=replace, renew=renew, now=clock(),
                                  target=target, refresh_only=refresh_only, policy=policy)
        render_plan(fresh.to_dict(), console)
        if fresh.violations:
            return EXIT_POLICY
        if not fresh.has_changes and not fresh.refresh:
            return EXIT_OK
        return fresh
    if planfile is not None:
        if replace or renew or target or refresh_only:
            raise UserError("--replace, --renew, --target and --refresh-only apply when planning, not to a saved "
                            "plan", "A saved plan already holds them: pass them to `fastuner plan --out FILE`.")
        plan = load_plan_file(planfile)
        if plan.project != project.spec.config.project:
            raise UserError(f"{planfile} is a plan for project {plan.project}, not {project.spec.config.project}")
        refused = recheck_policy(plan, project, policy)
        if refused is not None:
            render_violations(refused.to_dict(), console)
            return EXIT_POLICY
    else:
        planned = plan_shown()
        if isinstance(planned, int):
            return planned
        plan = planned
        if plan.has_changes and not plan.blocked and not auto_approve and not _confirm(console, destroy):
            render_cancelled("destroy" if destroy else "apply", console)
            return EXIT_ERROR
    operation = "destroy" if destroy or plan.mode == "destroy" else "apply"  # a `plan --destroy` file too
    if not plan.has_changes and not plan.refresh:
        render_no_changes(operation, console)
        return EXIT_OK
    for attempt in range(REPLANS + 1):
        try:
            with _Interrupts(console) as interrupts, ProgressView(console) as view:
                result = apply_plan(plan, project.store, project.provider, spec_dir=project.spec_dir,
                                    parallelism=parallelism, reporter=view, cancel=interrupts.cancel,
                                    wait_for=wait, clock=clock, operation=operation,
                                    sensitive=project.spec.sensitive)
            break
        except StalePlanError as exc:
            if planfile is not None or not auto_approve or attempt == REPLANS:
                raise
            replanned(exc, console)
        planned = plan_shown()
        if isinstance(planned, int):
            return planned  # a violation, or the other run did it all
        plan = planned
    if plan.mode == "refresh-only":
        render_refresh_complete(len(plan.refresh), console)
        return EXIT_OK
    return _report(result, console, operation)


# An auto-approved run whose plan went stale before it got the lock (another run applied meanwhile, the
# one it waited for with --lock-timeout) plans again, this many times: what it was asked to do is to make
# the world match the spec, not to carry out a plan nobody saw. A saved plan or an approved one is refused.
REPLANS = 3


def replanned(exc: UserError, console: Console) -> None:
    console.print(f"[yellow]{escape(exc.diagnostics[0].summary)}: another run changed the state before this "
                  "one got the lock; planning again.[/yellow]")


def recheck_policy(plan, project: Project, policy: str | None):
    """A saved plan as the policy refuses it (None: it may be applied). One saved with violations stays
    refused; one saved clean is checked again against the guard-rails of now (the spec's and the
    policy file's), which may have tightened since it was planned."""
    from fastuner.cli.policy import project_policy
    from fastuner.plan.policy import check_plan

    if plan.violations:
        return plan
    rules = project_policy(project.spec, policy)
    found = check_plan(plan, rules)
    return dataclasses.replace(plan, policy=rules.to_dict(), violations=found) if found else None


OUTCOME_EXIT = {ApplyOutcome.COMPLETE: EXIT_OK, ApplyOutcome.FAILED: EXIT_ERROR,
                ApplyOutcome.INTERRUPTED: EXIT_INTERRUPTED}


def _report(result, console: Console, operation: str) -> int:
    """The view words how the run ended; the exit code follows from the same outcome."""
    from fastuner.views.apply import render_apply_report

    render_apply_report(_report_data(result, operation), console)
    return OUTCOME_EXIT[result.outcome]


def _report_data(result, operation: str) -> dict:
    """An `ApplyResult` as the plain data views/apply.py words: each result, each bug, and the recorded
    outputs of every resource created or updated."""
    resources = []
    if result.state is not None:
        for r in result.results:
            rs = result.state.get(r.address) if r.status is ResultStatus.DONE and r.action != "delete" else None
            if rs is not None:
                resources.append({"address": r.address, "kind": rs.kind, "outputs": rs.outputs or {}})
    return {"operation": operation, "outcome": result.outcome,
            "results": [{"address": r.address, "action": r.action, "status": r.status, "message": r.message,
                         "deposed": r.deposed} for r in result.results],
            "bugs": [{"address": address, "traceback": tb} for address, _exc, tb in result.bugs],
            "resources": resources}


# --- import ----------------------------------------------------------------------------------------


def run_import(address: str, resource_id: str, file, var, workspace, *, console: Console,
               clock: Callable[[], datetime], lock_timeout: str | None = None, json_out: bool = False) -> int:
    """Adopt an existing resource (a SageMaker training job by name) as ADDRESS of the spec."""
    from fastuner.engine.adopt import import_resource

    talk = (lambda _text: None) if json_out else console.print
    project = open_project(file, var, workspace, lock_timeout=lock_timeout,
                           notice=lambda m: talk(f"[yellow]{escape(m)}[/yellow]"))
    from fastuner.config.kinds import resources

    if address not in set(resources(project.spec.config)):
        raise UserError(f"{address} is not in {project.spec.file.name}",
                        "Write the resource in the spec first, as it should be; import then checks the existing "
                        "one against it.")
    plan = make_project_plan(project, destroy=False, replace=[], renew=[], now=clock(), target=[address])
    rs = import_resource(plan, address, resource_id, project.store, project.provider, spec_dir=project.spec_dir,
                         clock=clock, progress=lambda text: talk(f"  {escape(text)}"))
    if json_out:
        from fastuner.views.documents import write_document

        write_document("import", {"address": address, "id": resource_id, "status": str(rs.status),
                                  "physical_name": rs.physical_name, "outputs": rs.outputs or {}})
        return EXIT_OK
    console.print(f"[bold green]Imported[/bold green] {escape(resource_id)} as {escape(address)} "
                  f"({escape(str(rs.status))}). `fastuner plan` now shows no change for it.")
    return EXIT_OK
