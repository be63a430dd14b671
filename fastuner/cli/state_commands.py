"""state list | show | rm, force-unlock, show (state overview) and schema."""

from __future__ import annotations

import json
import sys
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fastuner.cli.project import Project, open_project
from fastuner.errors import UserError

STATUS_STYLE = {"ready": "green", "pending": "cyan", "failed": "red", "expired": "dim"}


def _state(project: Project):
    state = project.store.read()
    if state is None:
        raise UserError(f"no state yet at {project.store.location}", "Run `fastuner apply` first.")
    return state


def run_state_list(file, workspace, console: Console, json_out: bool) -> int:
    project = open_project(file, None, workspace)
    state = project.store.read()
    addresses = sorted(state.resources) if state else []
    if json_out:
        sys.stdout.write(json.dumps(addresses) + "\n")
    else:
        for a in addresses:
            console.print(a, highlight=False)
    return 0


def run_state_show(address, file, workspace, console: Console, json_out: bool) -> int:
    project = open_project(file, None, workspace)
    state = _state(project)
    rs = state.get(address)
    if rs is None:
        raise UserError(f"{address} is not in state", f"In state: {', '.join(sorted(state.resources)) or 'nothing'}.")
    data = rs.model_dump(mode="json")
    if json_out:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
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


def run_state_overview(file, workspace, console: Console, json_out: bool) -> int:
    project = open_project(file, None, workspace)
    state = project.store.read()
    if json_out:
        sys.stdout.write((state.model_dump_json(indent=2) if state else "null") + "\n")
        return 0
    if state is None or not state.resources:
        console.print("The state is empty.")
        return 0
    table = Table(title=f"{state.project} ({state.workspace}) — serial {state.serial}", title_justify="left")
    for col in ("address", "status", "physical name", "expires", "summary"):
        table.add_column(col)
    for address in sorted(state.resources):
        rs = state.resources[address]
        style = STATUS_STYLE.get(str(rs.status), "white")
        summary = str((rs.outputs or {}).get("summary", "")) or (rs.error or "")
        table.add_row(escape(address), f"[{style}]{rs.status}[/{style}]", escape(rs.physical_name or ""),
                      rs.expires_at.isoformat(timespec="minutes") if rs.expires_at else "", escape(summary))
    console.print(table)
    return 0


def run_state_rm(addresses, file, workspace, console: Console) -> int:
    project = open_project(file, None, workspace)
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


def run_logs(address, follow: bool, file, workspace, console: Console) -> int:
    import time

    project = open_project(file, None, workspace)
    state = _state(project)
    rs = state.get(address)
    if rs is None:
        raise UserError(f"{address} is not in state", f"In state: {', '.join(sorted(state.resources)) or 'nothing'}.")
    provider = project.provider.for_kind(rs.kind)
    log_file = getattr(provider, "log_file", None)
    if log_file is None:
        raise UserError(f"{rs.kind} resources have no log on the {project.provider.name} provider")
    path, running = log_file(rs)
    if not path.exists():
        raise UserError(f"no log yet for {address} (expected {path})")
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.write(chunk.decode("utf-8", "replace"))
                sys.stdout.flush()
                continue
            if not follow or not running:
                break
            time.sleep(0.5)
            _, running = log_file(rs)
    return 0


def run_force_unlock(lock_id, file, workspace, console: Console) -> int:
    project = open_project(file, None, workspace)
    info = project.store.force_unlock(lock_id)
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
