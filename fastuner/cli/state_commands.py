"""state list | show | rm | pull | push, force-unlock, show (state overview) and schema."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from fastuner.cli.project import Project, open_project
from fastuner.errors import UserError
from fastuner.views.documents import write_document
from fastuner.views.resources import describe_outputs
from fastuner.views.state import STATUS_STYLE, render_state_overview


def _state(project: Project):
    state = project.store.read()
    if state is None:
        raise UserError(f"no state yet at {project.store.location}", "Run `fastuner apply` first.")
    return state


def run_state_list(file, var, workspace, console: Console, json_out: bool, err_console: Console) -> int:
    project = open_project(file, var, workspace, state_only=True)
    state = project.store.read()
    addresses = sorted(state.resources) if state else []
    if json_out:
        resources = [{"address": a, "kind": state.resources[a].kind, "status": str(state.resources[a].status)}
                     for a in addresses] if state else []
        write_document("state-list", {"state_exists": state is not None, "location": project.store.location,
                                      "workspace": project.workspace, "addresses": addresses,
                                      "resources": resources})
    elif not addresses:  # said on stderr: stdout stays a clean list for scripts
        err_console.print("No resources in state." if state else f"No state yet at {escape(project.store.location)}.")
    else:
        for a in addresses:
            console.print(a, highlight=False)
    return 0


def run_state_show(address, file, var, workspace, console: Console, json_out: bool) -> int:
    project = open_project(file, var, workspace, state_only=True)
    state = _state(project)
    rs = state.get(address)
    if rs is None:
        raise UserError(f"{address} is not in state", f"In state: {', '.join(sorted(state.resources)) or 'nothing'}.")
    data = rs.model_dump(mode="json")
    if json_out:
        write_document("resource", {"address": address, "resource": data})
        return 0
    style = STATUS_STYLE.get(data["status"], "white")
    console.print(f"[bold]# {escape(address)}[/bold]  [{style}]{data['status']}[/{style}]")
    for key in ("physical_name", "identity", "created_at", "updated_at", "expires_at", "error"):
        value = getattr(rs, key)
        if value:  # times as plan and show write them
            console.print(f"  {key:<14} = {escape(value.isoformat() if isinstance(value, datetime) else str(value))}")
    if data.get("pending"):
        console.print(f"  pending        = {escape(json.dumps(data['pending']))}")
    if data.get("depends_on"):
        console.print(f"  depends_on     = {escape(', '.join(data['depends_on']))}")
    console.print("  [bold]outputs[/bold]")
    for k, v in sorted((data.get("outputs") or {}).items()):
        console.print(f"    {k} = {escape(json.dumps(v))}", highlight=False)
    console.print("  [bold]inputs[/bold]")
    for k, v in sorted((data.get("inputs") or {}).items()):
        console.print(f"    {k} = {escape(json.dumps(v))}", highlight=False)
    for old in data.get("deposed") or []:
        console.print(f"  [yellow]deposed[/yellow] {escape(str(old.get('physical_name')))} (awaiting deletion)")
    return 0


def run_state_overview(file, var, workspace, console: Console, json_out: bool) -> int:
    project = open_project(file, var, workspace, state_only=True)
    state = project.store.read()
    if json_out:
        write_document("state", {"location": project.store.location, "workspace": project.workspace,
                                 "state": state.model_dump(mode="json") if state else None})
        return 0
    if state is None or not state.resources:
        console.print("The state is empty.")
        return 0
    rows = []
    for address in sorted(state.resources):
        rs = state.resources[address]
        summary = describe_outputs(rs.kind, rs.outputs) or rs.error or ""
        rows.append({"address": address, "status": str(rs.status), "physical_name": rs.physical_name or "",
                     "expires": rs.expires_at.isoformat(timespec="minutes") if rs.expires_at else "",
                     "summary": summary})
    render_state_overview(f"{state.project} ({state.workspace}) — serial {state.serial}", rows, console)
    return 0


def run_state_rm(addresses, file, var, workspace, console: Console, lock_timeout: str | None = None) -> int:
    project = open_project(file, var, workspace, state_only=True, lock_timeout=lock_timeout,
                           notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"))
    with project.store.lock("state rm"):
        state = _state(project)
        missing = [a for a in addresses if a not in state.resources]
        if missing:
            raise UserError(f"not in state: {', '.join(missing)}", "Nothing was removed.")
        draft = state.model_copy(deep=True)
        for a in addresses:
            del draft.resources[a]
        project.store.write(draft)
    for a in addresses:
        console.print(f"Removed {escape(a)} from state (nothing was destroyed).")
    return 0


def run_state_pull(out: str, file, var, workspace, console: Console, serial: int | None = None) -> int:
    """The stored state as JSON, on stdout ("-") or into a file; nothing is locked (a read). With
    `serial`, that earlier version, found in the store's history (S3 versions, the local .backup): to
    restore it, push it back with `state push --force`."""
    from fastuner.state.store import serialize_state

    project = open_project(file, var, workspace, state_only=True,
                           notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"))
    state = _state(project)
    if serial is not None and serial != state.serial:
        seen = [state.serial]
        for _where, old in project.store.history():
            seen.append(old.serial)
            if old.serial == serial:
                state = old
                break
        else:
            raise UserError(f"no version with serial {serial} in {project.store.location}'s history",
                            f"Versions kept: serial {', '.join(str(s) for s in seen)}. The S3 backend keeps every "
                            "version when the bucket has versioning (fastuner bootstrap turns it on); the local "
                            "backend keeps one (.backup).")
    text = serialize_state(state)
    if out == "-":
        sys.stdout.write(text)
        return 0
    try:
        from fastuner.state.local import write_private

        write_private(Path(out), text.encode("utf-8"))  # a copy of the state is as private as the state
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    console.print(f"Wrote the state of {escape(project.store.location)} (serial {state.serial}) to {escape(out)}.")
    return 0


def run_state_push(source: str, force: bool, file, var, workspace, console: Console,
                   lock_timeout: str | None = None) -> int:
    """Store a state document (a file, or "-": stdin) in the configured backend, under the lock, with
    the lineage and serial checks of `pushed_document`."""
    from fastuner.state.push import pushed_document
    from fastuner.state.store import parse_state

    project = open_project(file, var, workspace, state_only=True, lock_timeout=lock_timeout,
                           notice=lambda m: console.print(f"[yellow]{escape(m)}[/yellow]"))
    name = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{source}: no such file", "Pass a state file, e.g. one written by `fastuner state pull FILE`.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read {source}: {exc}") from None
    pushed = parse_state(text, name)
    store = project.store
    with store.lock("state push"):
        current = store.read()
        document = pushed_document(current, pushed, project=project.spec.config.project, workspace=project.workspace,
                                   force=force, source=name, location=store.location)
        if document is None:
            console.print(f"{escape(store.location)} already holds this state (serial {pushed.serial}); nothing to push.")
            return 0
        store.push(document, over=current)
    console.print(f"Pushed {escape(name)} to {escape(store.location)}: lineage {document.lineage}, serial "
                  f"{document.serial}" + (f" (was {current.serial})" if current is not None else "") + ".")
    return 0


def run_logs(address, follow: bool, file, var, workspace, console: Console) -> int:
    from fastuner.providers.base import ProviderError

    project = open_project(file, var, workspace, state_only=True)
    state = _state(project)
    rs = state.get(address)
    if rs is None:
        raise UserError(f"{address} is not in state", f"In state: {', '.join(sorted(state.resources)) or 'nothing'}.")
    mask, tail = project.spec.sensitive.mask_text, ""
    try:
        for chunk in project.provider.log_source(rs.kind).read_log(rs, follow=follow):
            # whole lines at a time: a sensitive value split between two chunks is masked all the same
            done, newline, tail = (tail + chunk).rpartition("\n")
            if len(tail) > 65536:
                done, newline, tail = done + newline + tail, "", ""
            sys.stdout.write(mask(done + newline))
            sys.stdout.flush()
    except ProviderError as exc:
        raise UserError(exc.message, exc.hint) from None
    sys.stdout.write(mask(tail))
    return 0


def run_force_unlock(lock_id, file, var, workspace, console: Console, json_out: bool = False) -> int:
    project = open_project(file, var, workspace, state_only=True)
    info = project.store.force_unlock(lock_id)
    if json_out:
        write_document("unlock", {"lock_id": info.id, "who": info.who, "pid": info.pid,
                                  "operation": info.operation, "created": info.created,
                                  "location": project.store.location})
        return 0
    console.print(f"[bold green]Released[/bold green] the lock {escape(info.id)} held by {escape(info.who)} "
                  f"(pid {info.pid}) for {escape(info.operation)} since {escape(info.created)}.")
    return 0


def schema_files(root: Path) -> dict[Path, str]:
    from fastuner.config.schema import spec_schema_text
    from fastuner.state.model import State

    state_schema = State.model_json_schema()
    state_schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "fastuner state",
                    **state_schema}
    return {
        root / "specs" / "fastuner.schema.json": spec_schema_text(),
        root / "state" / "state.schema.json": json.dumps(state_schema, indent=2, sort_keys=True) + "\n",
    }


def run_schema(check: bool, root: str, console: Console) -> int:
    stale = []
    for path, text in schema_files(Path(root)).items():
        current = path.read_text("utf-8") if path.exists() else None
        if current == text:
            continue
        if check:
            stale.append(path)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, "utf-8")
            console.print(f"wrote {path}")
    if stale:
        console.print(f"[red]stale:[/red] {', '.join(map(str, stale))} — run `fastuner schema` and commit.")
        return 1
    return 0
