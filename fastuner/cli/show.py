"""`fastuner show ADDRESS`: one resource in state, as `terraform state show` shows one; for a deployment,
also what it served over the last hour (`--since`): invocations, errors and latency per adapter, and the
server's adapter cache, from its provider's `MetricsSource` (CloudWatch on SageMaker, the server's
`/metrics` locally). An argument that names an existing file is a saved plan, never an address.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console

from fastuner.cli.project import open_project
from fastuner.config.duration import format_duration, parse_duration
from fastuner.errors import UserError
from fastuner.providers.base import ProviderError
from fastuner.state.model import Status

ADDRESS = re.compile(r"^(dataset|adapter|deployment)\.[A-Za-z0-9][A-Za-z0-9_.-]*$")
DEFAULT_SINCE = "1h"


def is_address(argument: str) -> bool:
    return bool(ADDRESS.match(argument)) and not Path(argument).exists()


def run_show_resource(address: str, file, var, workspace, *, json_out: bool, console: Console,
                      since: str | None = None, clock: Callable[[], datetime] | None = None) -> int:
    if not address.startswith("deployment."):
        if since is not None:
            raise UserError(f"--since goes with a deployment's metrics; {address} is not a deployment")
        from fastuner.cli.state_commands import run_state_show

        return run_state_show(address, file, var, workspace, console, json_out)
    window = _window(since or DEFAULT_SINCE)
    project = open_project(file, var, workspace, state_only=True)
    state = project.store.read()
    rs = state.get(address) if state is not None else None
    if rs is None:
        known = sorted(a for a in (state.resources if state else {}) if a.startswith("deployment."))
        raise UserError(f"{address} is not in state (deployments in state: {', '.join(known) or 'none'})",
                        "Run `fastuner apply` to create it.")
    now = (clock or (lambda: datetime.now(UTC)))()
    metrics = None
    if rs.status is Status.READY:
        try:
            metrics = project.provider.metrics_source().metrics(rs, now - window, now)
        except ProviderError as exc:
            raise UserError(exc.message, exc.hint) from None
    outputs = rs.outputs or {}
    adapters = outputs.get("adapters") or {}
    data = {"address": address, "status": str(rs.status), "physical_name": rs.physical_name,
            "expires_at": rs.expires_at.isoformat() if rs.expires_at else None,
            "endpoint": outputs.get("url") or outputs.get("endpoint_name"), "mode": outputs.get("mode"),
            "adapters": sorted(adapters) if isinstance(adapters, dict) else list(adapters),
            "window": format_duration(window), "metrics": metrics}
    if json_out:
        from fastuner.views.documents import write_document

        write_document("deployment", data)
        return 0
    from fastuner.views.metrics import render_deployment

    render_deployment(data, console)
    return 0


def _window(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--since {text}: {exc}", "Write a duration such as 30m, 3h or 2d.") from None
