"""The composition root's wiring: spec → state store and provider. The only place providers are built."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fastuner.cli import runtime
from fastuner.config.duration import parse_duration
from fastuner.config.loader import Spec, load_spec
from fastuner.errors import UserError
from fastuner.providers.base import Provider
from fastuner.state.local import LocalStateStore
from fastuner.state.store import StateStore

if TYPE_CHECKING:
    from fastuner.aws.clients import AwsSession

WORKSPACE_ENV = "FASTUNER_WORKSPACE"


@dataclass
class Project:
    spec: Spec
    workspace: str
    store: StateStore
    provider: Provider

    @property
    def spec_dir(self) -> Path:
        return self.spec.base_dir


def parse_vars(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"--var {pair!r} is not NAME=VALUE")
        out[name.strip()] = value
    return out


def resolve_workspace(workspace: str | None, environ: Mapping[str, str]) -> str:
    ws = workspace or environ.get(WORKSPACE_ENV) or "default"
    import re

    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", ws):
        raise UserError(f"invalid workspace name {ws!r}", "Use lowercase letters, digits and dashes.")
    return ws


def state_path(spec: Spec, workspace: str) -> Path:
    backend = spec.config.backend.local
    rel = backend.path if backend and backend.path else f"state/{spec.config.project}.json"
    path = spec.resolve(rel)
    if workspace != "default":
        path = path.with_name(f"{path.stem}.{workspace}{path.suffix or '.json'}")
    return path


def build_store(spec: Spec, workspace: str, notice=None, lock_timeout: float = 0.0,
                environ: Mapping[str, str] | None = None) -> StateStore:
    s3 = spec.config.backend.s3
    if s3 is not None:
        from fastuner.aws.clients import AwsSession
        from fastuner.state.s3 import S3StateStore, workspace_key

        session = AwsSession(s3.region, environ=environ)
        return S3StateStore(session, s3.bucket, workspace_key(s3.key, workspace), kms_key_id=s3.kms_key_id,
                            on_notice=notice, lock_timeout=lock_timeout, lease=s3.lock_lease.total_seconds())
    return LocalStateStore(state_path(spec, workspace), on_notice=notice, lock_timeout=lock_timeout)


def build_provider(spec: Spec, workspace: str, environ: Mapping[str, str]) -> Provider:
    if spec.config.provider.local is not None:
        from fastuner.providers.local import local_provider

        return local_provider(spec, workspace, environ)
    from fastuner.providers.sagemaker import sagemaker_provider

    return sagemaker_provider(spec, workspace, environ)


def open_project(file: str | None, variables: list[str] | None, workspace: str | None, *, notice=None,
                 state_only: bool = False, lock_timeout: str | None = None) -> Project:
    """The spec, its state store and provider. `state_only`: for commands that read or edit state
    without planning; the spec's resources are not loaded, so their variables need no value.
    `lock_timeout` (a duration, "0" by default) is how long to wait for a state lock held elsewhere."""
    wait = parse_lock_timeout(lock_timeout)
    environ = runtime.current().environ
    spec = load_spec(file, variables=parse_vars(variables), resources=not state_only, environ=environ)
    runtime.current().sensitive.extend(spec.sensitive.values)
    ws = resolve_workspace(workspace, environ)
    return Project(spec=spec, workspace=ws, store=build_store(spec, ws, notice, wait, environ),
                   provider=build_provider(spec, ws, environ))


def load_settings(file: str | None, variables: list[str] | None, workspace: str | None) -> tuple[Spec, str]:
    """The spec's settings without its resources (so a variable only a resource uses needs no value)
    and the workspace: for the commands that set up AWS (`bootstrap`, `iam-policy`)."""
    environ = runtime.current().environ
    spec = load_spec(file, variables=parse_vars(variables), resources=False, environ=environ)
    return spec, resolve_workspace(workspace, environ)


def aws_session(spec: Spec, environ: Mapping[str, str], region: str | None = None) -> AwsSession:
    """An `AwsSession` for `region`; default the provider's region, else the S3 backend's."""
    from fastuner.aws.clients import AwsSession

    config = spec.config
    sm, s3 = config.provider.sagemaker, config.backend.s3
    return AwsSession(region or (sm.region if sm else None) or (s3.region if s3 else None), environ=environ)


def parse_lock_timeout(text: str | None) -> float:
    """Seconds from `--lock-timeout` ("30s", "5m"); "0" means do not wait."""
    if text is None or text.strip() in ("0", "0s"):
        return 0.0
    try:
        return parse_duration(text).total_seconds()
    except ValueError as exc:
        raise UserError(f"--lock-timeout {text}: {exc}", "Write a duration such as 30s or 5m (0: do not wait).") from None
