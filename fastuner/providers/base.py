"""The provider protocol: one small interface per resource kind; all side effects live behind it.

Contract (every implementation, local, SageMaker or in-memory):
- `read` never changes anything. A resource that no longer exists reads as status "missing".
- `create` is idempotent by `change.physical_name`: names are deterministic, so a create re-run after a
  crash adopts what the crashed run started instead of starting it twice.
- `delete` of something that does not exist returns silently.
- Long operations honour `ctx.wait` (False with `apply --no-wait`) and `ctx.cancelled` (the first
  Ctrl-C): they return `Outcome.pending(...)` and leave the work running, recorded so that the next run
  picks it up; they never orphan work.
- Failures the user can act on raise `ProviderError` with what to do; anything else is a bug.

Besides the resource kinds, a provider offers what the CLI does to running resources, each an explicit
capability built in the composition root (never looked up by attribute): the logs of a kind's work
(`fastuner logs`), an endpoint to invoke a deployment (`fastuner invoke`), a deployment's metrics
(`fastuner show deployment.NAME`), the stored splits of a dataset (`invoke --evaluate`), and adopting
what already exists (`fastuner import`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from fastuner.errors import Diagnostic
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation
from fastuner.plan.prices import PriceBook
from fastuner.providers.endpoint import Endpoint
from fastuner.state.model import ResourceState


class ProviderError(Exception):
    """A failure of one resource, explained: what happened and what to do."""

    def __init__(self, message: str, hint: str = "", *, address: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.address = address  # the resource it concerns, where one call covered several

    def __str__(self) -> str:
        return f"{self.message} — {self.hint}" if self.hint else self.message


class OutcomeStatus(StrEnum):
    READY = "ready"  # the work is finished
    PENDING = "pending"  # the work was started and left running


@dataclass(frozen=True)
class Outcome:
    status: OutcomeStatus
    outputs: Mapping[str, Any] = field(default_factory=dict)
    detail: str = ""

    @classmethod
    def ready(cls, outputs: Mapping[str, Any]) -> Outcome:
        return cls(OutcomeStatus.READY, dict(outputs))

    @classmethod
    def pending(cls, outputs: Mapping[str, Any], detail: str = "") -> Outcome:
        return cls(OutcomeStatus.PENDING, dict(outputs), detail)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Context:
    """What an operation may use besides its change."""

    address: str
    spec_dir: Path
    upstream: Mapping[str, ResourceState] = field(default_factory=dict)
    progress: Callable[[str], None] = lambda _text: None
    warning: Callable[[str], None] = lambda _text: None  # a line apply prints and keeps (not transient)
    cancelled: threading.Event = field(default_factory=threading.Event)
    wait: bool = True
    now: Callable[[], datetime] = utcnow
    # every string state still points at, object keys among them: a delete spares the keys in it
    referenced: Callable[[], set[str]] = set


READ_WORKERS = 10  # reads at once in the default `read_many` (a local server's /ping, a Describe call)


class ResourceProvider(Protocol):
    """Implementations subclass this protocol explicitly, so that they inherit `read_many`."""

    kind: str

    def read(self, rs: ResourceState) -> Observation: ...

    def read_many(self, states: Sequence[ResourceState]) -> dict[str, Observation]:
        """Observations by address. The default reads each, in parallel; a cloud provider overrides it to
        cover N resources with a few List calls instead of N Describe calls. A failure to read one
        resource raises ProviderError naming its `address`."""
        if len(states) <= 1:
            return {rs.address: _read_one(self, rs) for rs in states}
        with ThreadPoolExecutor(max_workers=min(READ_WORKERS, len(states))) as pool:
            return dict(zip((rs.address for rs in states), pool.map(lambda rs: _read_one(self, rs), states),
                            strict=True))

    def create(self, change: Change, ctx: Context) -> Outcome: ...

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome: ...

    def delete(self, rs: ResourceState, ctx: Context) -> None: ...


def _read_one(resources: ResourceProvider, rs: ResourceState) -> Observation:
    try:
        return resources.read(rs)
    except ProviderError as exc:
        exc.address = exc.address or rs.address
        raise


class LogSource(Protocol):
    """A kind whose work writes a log: a training run's, a server's."""

    def read_log(self, rs: ResourceState, *, follow: bool) -> Iterator[str]:
        """The log's text in chunks, from the start; with `follow`, more as it is written, until the work
        ends. ProviderError when there is no log (yet)."""
        ...


class EndpointSource(Protocol):
    """Deployments that can be invoked."""

    def endpoint(self, rs: ResourceState, *, timeout: float, retries: int) -> Endpoint:
        """The deployment's endpoint, once it answers; ProviderError (what to do) when it does not."""
        ...


class MetricsSource(Protocol):
    """Deployments whose traffic can be read back (`fastuner show deployment.NAME`)."""

    def metrics(self, rs: ResourceState, since: datetime, until: datetime) -> dict[str, Any]:
        """What the deployment served between `since` and `until`, as plain data the views word:

            {"source": "cloudwatch" | "server", "since": ISO, "until": ISO (the window covered),
             "adapters": [{"adapter": NAME or None (the base model), "invocations": N, "errors_4xx": N,
                           "errors_5xx": N, "latency_ms": {"p50", "p95", "p99"} (None without traffic),
                           "cache": {"hits", "misses", "loads"} or None}],
             "endpoint": the same counts for the whole endpoint, or None,
             "cache": {"hits", "misses", "loads", "evictions"?} (the server's adapter cache) or None,
             "notes": [sentences]}

        A source that keeps no history (the local server counts since it started) says so in `since`
        and `notes`. ProviderError (what to do) when nothing can be read."""
        ...


class SplitSource(Protocol):
    """Datasets whose stored splits can be read back."""

    def read_split(self, rs: ResourceState, split: str) -> bytes:
        """The split's JSON Lines exactly as stored (what training read); ProviderError when it is gone."""
        ...


class ImportSource(Protocol):
    """A kind whose existing cloud resources can be brought under fastuner (`fastuner import`)."""

    def import_resource(self, change: Change, resource_id: str, ctx: Context) -> Outcome:
        """Adopt the existing resource `resource_id` as the planned creation `change`. ProviderError, listing
        how it differs, when it is not what the spec describes (then nothing is recorded)."""
        ...


@dataclass
class Provider:
    """A named set of resource providers, built in one place (the CLI's composition root)."""

    name: str
    resources: Mapping[str, ResourceProvider]
    priced: bool = False
    unsupported: Mapping[str, str] = field(default_factory=dict)
    training_code_hash: Callable[[], str] = lambda: ""
    keep_previous: int = 3  # earlier trained versions of each adapter kept restorable (the adapter cache)
    checks: Callable[[], list[Diagnostic]] = list  # what this machine lacks to apply the spec (validate, plan)
    logs: Mapping[str, LogSource] = field(default_factory=dict)  # by kind
    endpoints: EndpointSource | None = None
    metrics: MetricsSource | None = None  # of deployments
    splits: SplitSource | None = None
    importers: Mapping[str, ImportSource] = field(default_factory=dict)  # by kind
    # for a priced provider's estimates: the prices to use (shipped, or a newer `prices update` copy), and
    # what each adapter will train on ({adapter: {"tokens", "counted", "params_b"}}) given the dataset hashes
    price_book: Callable[[], PriceBook] | None = None
    training_work: Callable[[Mapping[str, str]], Mapping[str, Mapping[str, Any]]] | None = None

    def for_kind(self, kind: str) -> ResourceProvider:
        try:
            return self.resources[kind]
        except KeyError:
            raise ProviderError(f"the {self.name} provider has no implementation for {kind} resources") from None

    def log_source(self, kind: str) -> LogSource:
        try:
            return self.logs[kind]
        except KeyError:
            raise ProviderError(f"{kind} resources have no log on the {self.name} provider") from None

    def importer(self, kind: str) -> ImportSource:
        try:
            return self.importers[kind]
        except KeyError:
            raise ProviderError(f"{kind} resources cannot be imported on the {self.name} provider") from None

    def endpoint_source(self) -> EndpointSource:
        if self.endpoints is None:
            raise ProviderError(f"the {self.name} provider cannot invoke deployments")
        return self.endpoints

    def metrics_source(self) -> MetricsSource:
        if self.metrics is None:
            raise ProviderError(f"the {self.name} provider cannot read a deployment's metrics")
        return self.metrics

    def split_source(self) -> SplitSource:
        if self.splits is None:
            raise ProviderError(f"the {self.name} provider cannot read dataset splits back")
        return self.splits
