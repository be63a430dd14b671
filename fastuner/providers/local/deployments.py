"""Deployments on the local provider: the inference server (containers/serve) as a detached process on
127.0.0.1, serving the base model and its adapters' artifacts from state.

    <work>/deployments/<physical name>/
        serve.log       the server's log (`fastuner logs deployment.NAME -f`)
        port            written by the server once it is ready
        process.json    pid and start time; exit_code when it ends
        token           the management API's token for this server (0600; in no state, log or argv)

Refresh checks the process and `/ping` (a dead server is drift: the plan recreates it) and reads the
last invocation time from `/metrics` (it drives `idle_ttl`); `fastuner show deployment.NAME` reads the
rest of `/metrics`. Adding, replacing or removing adapters
goes through the server's management API without a restart; a new cache size or port restarts it.
The management API answers only with the deployment's own token (another user of the machine can
reach 127.0.0.1 too): a random one per start, handed over in the environment.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, ProviderError, ResourceProvider
from fastuner.providers.endpoint import Endpoint
from fastuner.providers.local import processes
from fastuner.providers.local.client import Client
from fastuner.providers.local.http import HttpError, metric, request
from fastuner.providers.programs import program
from fastuner.providers.training import resolve_model
from fastuner.state.model import ResourceState

TOKEN_ENV = "FASTUNER_MANAGEMENT_TOKEN"  # containers/serve/README.md, "Who may call them"
EXIT_REASONS = {2: "bad settings", 3: "the base model cannot be loaded", 4: "an adapter is missing, corrupt or "
                "does not match the base model", 5: "the port is already in use"}


class LocalDeployments(ResourceProvider):
    kind = "deployment"

    def __init__(self, work_dir: Path, spec_dir: Path, *, python: str | None = None, device: str = "auto",
                 startup_timeout: float = 600.0, poll: float = 0.1, env: Mapping[str, str] | None = None) -> None:
        self.root = work_dir / "deployments"
        self.env = dict(os.environ if env is None else env)  # what the server starts with
        self.spec_dir = spec_dir
        self.python = python or sys.executable
        self.device = device
        self.startup_timeout = startup_timeout
        self.poll = poll

    def run_dir(self, physical_name: str) -> Path:
        return self.root / physical_name

    # --- reading ---------------------------------------------------------------------------------

    def read(self, rs: ResourceState) -> Observation:
        run = self.run_dir(rs.physical_name or "")
        info = processes.recorded(run)
        if not info or not processes.alive(int(info["pid"])):
            code = processes.exit_code(run)
            why = f" (exited with code {code})" if code is not None else ""
            return Observation(ObservationStatus.MISSING, detail=f"the server is not running{why}")
        url = rs.outputs.get("url") or self._url(run)
        if url is None:
            return Observation(ObservationStatus.PENDING, detail="the server is starting")
        try:
            request("GET", f"{url}/ping", timeout=5)
            text = request("GET", f"{url}/metrics", timeout=5)
        except (OSError, HttpError) as exc:
            return Observation(ObservationStatus.MISSING, detail=f"the server (pid {info['pid']}) does not answer at {url}: {exc}")
        last = metric(text, "fastuner_last_invocation_timestamp_seconds") if isinstance(text, str) else None
        last_at = datetime.fromtimestamp(last, UTC) if last else None
        return Observation(ObservationStatus.READY, outputs=rs.outputs, last_activity=last_at)

    @staticmethod
    def _url(run: Path) -> str | None:
        try:
            port = int((run / "port").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return f"http://127.0.0.1:{port}"

    # --- creating ----------------------------------------------------------------------------------

    def create(self, change: Change, ctx: Context) -> Outcome:
        inputs = change.after or {}
        run = self.run_dir(change.physical_name or change.address)
        adapters = self._artifacts(inputs, ctx)
        info = processes.recorded(run)
        if info and processes.alive(int(info["pid"])):  # a crashed apply started it: adopt it
            ctx.progress(f"adopting the running server (pid {info['pid']})")
            return self._wait_ready(run, int(info["pid"]), inputs, adapters, ctx)
        launched = self._start(run, inputs, adapters, ctx)
        return self._wait_ready(run, launched.pid, inputs, adapters, ctx)

    def _artifacts(self, inputs: dict[str, Any], ctx: Context) -> dict[str, str]:
        out = {}
        for name in inputs.get("adapters", []):
            rs = ctx.upstream.get(f"adapter.{name}")
            artifact = (rs.outputs.get("artifact_dir") if rs is not None else None)
            if not artifact or not Path(artifact).is_dir():
                raise ProviderError(f"adapter.{name} has no trained artifact to serve",
                                    f"Apply adapter.{name} first (fastuner apply), or remove it from this deployment.")
            out[name] = artifact
        return out

    def _start(self, run: Path, inputs: dict[str, Any], adapters: dict[str, str], ctx: Context) -> processes.Launched:
        processes.clear_leftovers(run)  # a server whose wrapper was killed still holds its port
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True, exist_ok=True)
        argv = [self.python, str(program("serve")), "--base-model", resolve_model(inputs["base_model"], self.spec_dir),
                "--host", "127.0.0.1", "--port", str(inputs.get("port") or 0), "--port-file", str(run / "port"),
                "--cache-size", str(inputs.get("cache_size", 8))]
        if self.device != "auto":
            argv += ["--device", self.device]
        for name, path in sorted(adapters.items()):
            argv += ["--adapter", f"{name}={path}"]
        env = {**self.env, "PYTHONUNBUFFERED": "1", TOKEN_ENV: _new_token(run)}
        ctx.progress("starting the server")
        return processes.launch(argv, cwd=run, env=env, log=run / "serve.log")

    def _wait_ready(self, run: Path, pid: int, inputs: dict[str, Any], adapters: dict[str, str],
                    ctx: Context) -> Outcome:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            url = self._url(run)
            if url is not None:
                try:
                    request("GET", f"{url}/ping", timeout=5)
                except (OSError, HttpError):
                    pass
                else:
                    return Outcome.ready(self._outputs(run, pid, url, inputs, adapters))
            code = processes.exit_code(run)
            if code is not None or not processes.alive(pid):
                processes.reap(pid)
                hint = (f"choose another `port:` for {ctx.address} in the spec, or remove it to use a free one"
                        if code == 5 else f"fastuner logs {ctx.address}")
                raise ProviderError(self._failure(run, code), hint)
            if ctx.cancelled.is_set():
                return Outcome.pending({"pid": pid, "log": str(run / "serve.log")},
                                       "interrupted while the server was starting; the next apply picks it up")
            time.sleep(self.poll)
        processes.stop(pid)
        raise ProviderError(f"the server did not become ready within {self.startup_timeout:.0f} s",
                            f"See {run / 'serve.log'}.")

    @staticmethod
    def _failure(run: Path, code: int | None) -> str:
        lines = []
        with contextlib.suppress(FileNotFoundError):
            lines = [ln for ln in (run / "serve.log").read_text(errors="replace").splitlines()
                     if ln.startswith("fastuner-serve: error:")]
        reason = lines[-1].removeprefix("fastuner-serve: error:").strip() if lines else EXIT_REASONS.get(
            code or -1, f"the server exited with code {code}")
        return f"the server failed to start: {reason} (log: {run / 'serve.log'})"

    def _outputs(self, run: Path, pid: int, url: str, inputs: dict[str, Any], adapters: dict[str, str]) -> dict[str, Any]:
        info = processes.recorded(run) or {}
        return {
            "url": url,
            "port": int(url.rsplit(":", 1)[1]),
            "pid": pid,
            "started_at": datetime.fromtimestamp(float(info.get("started_at", time.time())), UTC).isoformat(),
            "adapters": dict(sorted(adapters.items())),
            "base_model": inputs["base_model"],
            "cache_size": inputs.get("cache_size", 8),
            "log": str(run / "serve.log"),
        }

    # --- updating ------------------------------------------------------------------------------------

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        inputs = change.after or {}
        run = self.run_dir(prior.physical_name or "")
        desired = self._artifacts(inputs, ctx)
        before = prior.inputs or {}
        restart = (inputs.get("cache_size") != before.get("cache_size")
                   or inputs.get("port") != before.get("port"))
        info = processes.recorded(run)
        alive = bool(info) and processes.alive(int(info["pid"]))
        if restart or not alive:
            if info:
                processes.stop(int(info["pid"]))
            launched = self._start(run, inputs, desired, ctx)
            return self._wait_ready(run, launched.pid, inputs, desired, ctx)
        url = prior.outputs["url"]
        current = dict(prior.outputs.get("adapters") or {})
        auth = _auth(run)
        try:
            for name, path in sorted(desired.items()):
                if current.get(name) != path:
                    ctx.progress(f"{'replacing' if name in current else 'adding'} adapter {name}")
                    request("POST", f"{url}/adapters/{name}", {"path": path}, timeout=120, headers=auth)
            for name in sorted(set(current) - set(desired)):
                ctx.progress(f"removing adapter {name}")
                try:
                    request("DELETE", f"{url}/adapters/{name}", timeout=30, headers=auth)
                except HttpError as exc:
                    if exc.status != 404:
                        raise
        except HttpError as exc:
            raise ProviderError(f"the server refused the change: {exc.message}", f"See {run / 'serve.log'}.") from None
        except OSError as exc:
            raise ProviderError(f"the server at {url} does not answer: {exc}",
                                "Run fastuner plan: a dead server is recreated.") from None
        return Outcome.ready(self._outputs(run, int(info["pid"]), url, inputs, desired))

    # --- deleting and logs ---------------------------------------------------------------------------

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        run = self.run_dir(rs.physical_name or "")
        info = processes.recorded(run)
        if info:
            processes.stop(int(info["pid"]), grace=30)
        shutil.rmtree(run, ignore_errors=True)

    def read_log(self, rs: ResourceState, *, follow: bool) -> Iterator[str]:
        """The server's serve.log; followed while the server runs."""
        run = self.run_dir(rs.physical_name or "")

        def running() -> bool:
            info = processes.recorded(run)
            return bool(info) and processes.alive(int(info["pid"]))

        return processes.read_log(rs.address, run / "serve.log", running, follow=follow)

    # --- metrics -------------------------------------------------------------------------------------

    def metrics(self, rs: ResourceState, since: datetime, until: datetime) -> dict[str, Any]:
        """The server's `/metrics`: counted since it started (it keeps no history; `since` cannot apply)."""
        from fastuner.providers.local.servermetrics import server_metrics

        url = rs.outputs.get("url")
        if not url:
            raise ProviderError(f"{rs.address} records no server URL (is it still starting?)",
                                "Run `fastuner apply` to finish it.")
        try:
            text = request("GET", f"{url}/metrics", timeout=5)
        except (OSError, HttpError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise ProviderError(f"the server of {rs.address} at {url} does not answer ({why})",
                                "`fastuner plan` will show it being recreated, `fastuner apply` recreates it.") from None
        return server_metrics(text if isinstance(text, str) else "", sorted(rs.outputs.get("adapters") or {}), until)

    # --- invoking ------------------------------------------------------------------------------------

    def endpoint(self, rs: ResourceState, *, timeout: float, retries: int) -> Endpoint:
        """The server's `/invocations`, once `/ping` answers (a dead server is the plan's to recreate)."""
        url = rs.outputs["url"]
        try:
            request("GET", f"{url}/ping", timeout=5)
        except (OSError, HttpError) as exc:
            why = getattr(exc, "reason", None) or exc
            raise ProviderError(f"the server of {rs.address} at {url} is not running ({why}); `fastuner plan` "
                                "will show it being recreated, `fastuner apply` recreates it") from None
        return Client(url, timeout=timeout, retries=retries)


def _new_token(run: Path) -> str:
    """A fresh management token for the server about to start in `run`, kept there for later updates."""
    import secrets

    token = secrets.token_urlsafe(32)
    fd = os.open(run / "token", os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def _auth(run: Path) -> dict[str, str]:
    """The header the server in `run` wants (none for one started before servers had tokens)."""
    try:
        return {"Authorization": f"Bearer {(run / 'token').read_text().strip()}"}
    except FileNotFoundError:
        return {}
