"""Each resource kind as one declaration, which the graph, planner, engine and views iterate over.

A `Kind` says everything fastuner knows about a kind that is not a provider's business: its spec model
and section, how each input is classified (`modes`: REPLACE forces a new instance, UPDATE changes in
place; every leaf field of the model and every derived input is listed, section fields such as
`training.learning_rate` one by one, so a test catches a new field), the references that make its
dependencies, the inputs the planner derives (the identity of what it is built from), what it runs on
(the plan's cost estimate) and its lifetime (ttl and idle_ttl). The hooks are pure functions of the spec
model or of a resource's recorded inputs (their JSON form, as state keeps them).

It lives beside the spec models because every layer needs it: `config` (the loader and checks),
`graph` (edges), `plan` (identities, expiry, cost), `engine` and `views`.

To add a kind: its model and its `Config` section in config/models.py, a `Kind` in `KINDS` below, a
resource provider per provider (registered in that provider's constructor), and its words in
views/resources.py (docs/architecture.md lists the files).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from pydantic import BaseModel

from fastuner.config.duration import format_duration, parse_duration
from fastuner.config.models import Adapter, Config, Dataset, Deployment

REPLACE = "replace"
UPDATE = "update"


class Facts(Protocol):
    """What refresh read from the world that a derived input is made of (`plan.observed.Observed`)."""

    @property
    def dataset_sources(self) -> Mapping[str, str]: ...

    @property
    def training_code_hash(self) -> str: ...


@dataclass(frozen=True)
class Reference:
    """A reference written in a resource's spec: `kind.name`, at `path` inside the resource."""

    kind: str
    name: str
    path: tuple[str | int, ...]


@dataclass(frozen=True)
class Usage:
    """What a resource runs on, for the plan's cost estimate. `hourly`: billed while it runs (an
    endpoint; `hours` then bounds its lifetime, if any); otherwise a job of at most `hours`. `shared_by`:
    how many adapters one endpoint serves (the plan shows the cost per adapter-hour)."""

    instance_type: str
    count: int
    hours: float | None
    hourly: bool
    spot: bool = False
    shared_by: int = 0


@dataclass(frozen=True)
class Expiry:
    """A lifetime that has ended: when, why in words, and whether it was the idle one."""

    ended: datetime
    detail: str
    idle: bool


def _no_references(model: Any) -> Iterator[Reference]:
    return iter(())


def _no_usage(inputs: Mapping[str, Any]) -> Usage | None:
    return None


def _no_lifetime(inputs: Mapping[str, Any]) -> timedelta | None:
    return None


def _no_expiry(inputs: Mapping[str, Any], created: datetime, last_activity: datetime | None,
               now: datetime) -> Expiry | None:
    return None


def _no_words(model: Any) -> str:
    return ""


@dataclass(frozen=True)
class Kind:
    name: str  # the address prefix: `adapter.NAME`
    section: str  # the key of fastuner.yaml that holds them
    short: str  # in physical names: `<project>-ad-<name>-<identity>`
    model: type[BaseModel]
    modes: Mapping[str, str]  # dotted input path -> REPLACE | UPDATE; the longest classified prefix decides
    # inputs the planner adds to the spec's, from upstream identities and what refresh read
    derived: tuple[str, ...] = ()
    derive: Callable[[str, Any, Callable[[str], str], Facts], dict[str, Any]] = lambda name, model, ident, facts: {}
    references: Callable[[Any], Iterator[Reference]] = _no_references  # besides `depends_on`
    atomic: frozenset[str] = frozenset()  # maps compared and shown as one value
    provider_only: Mapping[str, str] = field(default_factory=dict)  # dotted path -> the one provider using it
    usage: Callable[[Mapping[str, Any]], Usage | None] = _no_usage
    lifetime: tuple[str, ...] = ()  # inputs that set its lifetime; an expiry records them
    ttl: Callable[[Mapping[str, Any]], timedelta | None] = _no_lifetime  # hard lifetime from creation
    expiry: Callable[[Mapping[str, Any], datetime, datetime | None, datetime], Expiry | None] = _no_expiry
    new_version: Callable[[Any], str] = _no_words  # why it is rebuilt when what it is built from is
    # why it is rebuilt when its forcing inputs are `paths` ("" to list them)
    forcing_words: Callable[[Any, tuple[str, ...]], str] = lambda model, paths: ""


_COMMON = {"tags": UPDATE, "depends_on": UPDATE}


def _dataset_derive(name: str, model: Dataset, identity_of: Callable[[str], str], facts: Facts) -> dict[str, Any]:
    return {"source_sha256": facts.dataset_sources.get(name, "")}


def _adapter_derive(name: str, model: Adapter, identity_of: Callable[[str], str], facts: Facts) -> dict[str, Any]:
    return {"dataset_identity": identity_of(f"dataset.{model.dataset}"),
            "training_code_hash": facts.training_code_hash}


def _deployment_derive(name: str, model: Deployment, identity_of: Callable[[str], str],
                       facts: Facts) -> dict[str, Any]:
    return {"adapter_identities": {a: identity_of(f"adapter.{a}") for a in model.adapters}}


def _adapter_references(model: Adapter) -> Iterator[Reference]:
    yield Reference("dataset", model.dataset, ("dataset",))


def _deployment_references(model: Deployment) -> Iterator[Reference]:
    for i, adapter in enumerate(model.adapters):
        yield Reference("adapter", adapter, ("adapters", i))


def _training_usage(inputs: Mapping[str, Any]) -> Usage:
    compute = inputs.get("compute") or {}
    runtime = compute.get("max_runtime")
    return Usage(compute.get("instance_type", ""), int(compute.get("instance_count", 1)),
                 parse_duration(runtime).total_seconds() / 3600 if runtime else None, hourly=False,
                 spot=bool(compute.get("spot")))


def _endpoint_usage(inputs: Mapping[str, Any]) -> Usage:
    compute = inputs.get("compute") or {}
    ttl = _deployment_ttl(inputs)
    return Usage(compute.get("instance_type", ""), int(compute.get("count", 1)),
                 ttl.total_seconds() / 3600 if ttl else None, hourly=True,
                 shared_by=len(inputs.get("adapters") or []))


def _deployment_ttl(inputs: Mapping[str, Any]) -> timedelta | None:
    return parse_duration(inputs["ttl"]) if inputs.get("ttl") else None


def _deployment_expiry(inputs: Mapping[str, Any], created: datetime, last_activity: datetime | None,
                       now: datetime) -> Expiry | None:
    """A running deployment's lifetime has ended: `ttl` counts from creation, `idle_ttl` from the last
    invocation (or creation, if none)."""
    ttl = _deployment_ttl(inputs)
    if ttl is not None and created + ttl <= now:
        ended = created + ttl
        return Expiry(ended, f"ttl {format_duration(ttl)} from {created.isoformat()} ended {ended.isoformat()}",
                      idle=False)
    idle = parse_duration(inputs["idle_ttl"]) if inputs.get("idle_ttl") else None
    if idle is not None:
        last = last_activity or created
        if last + idle <= now:
            return Expiry(last + idle, f"no invocation since {last.isoformat()} (idle_ttl {format_duration(idle)})",
                          idle=True)
    return None


def _dataset_forcing(model: Dataset, paths: tuple[str, ...]) -> str:
    return f"{model.path} changed: a new dataset version" if "source_sha256" in paths else ""


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind(
        name="dataset", section="datasets", short="ds", model=Dataset,
        modes={
            "path": UPDATE,  # a moved file with the same bytes is the same version
            "task": REPLACE,
            "split.train": REPLACE, "split.validation": REPLACE, "split.test": REPLACE, "split.seed": REPLACE,
            "checks.min_rows": REPLACE, "checks.max_input_chars": REPLACE, "checks.max_target_chars": REPLACE,
            **_COMMON,
            "source_sha256": REPLACE,  # the content hash of the JSONL: a changed file is a new version
        },
        derived=("source_sha256",), derive=_dataset_derive, atomic=frozenset({"tags"}),
        forcing_words=_dataset_forcing,
    ),
    Kind(
        name="adapter", section="adapters", short="ad", model=Adapter,
        modes={
            "base_model": REPLACE,
            "base_model_revision": REPLACE,
            "dataset": UPDATE,  # the name; what is trained on is `dataset_identity`
            "dataset_identity": REPLACE,  # the dataset version: a replaced dataset replaces its adapters
            "method": REPLACE,
            "lora.r": REPLACE, "lora.alpha": REPLACE, "lora.dropout": REPLACE, "lora.target_modules": REPLACE,
            "training.epochs": REPLACE, "training.learning_rate": REPLACE, "training.warmup_ratio": REPLACE,
            "training.weight_decay": REPLACE, "training.batch_tokens": REPLACE, "training.grad_accum": REPLACE,
            "training.max_seq_len": REPLACE, "training.gradient_checkpointing": REPLACE,
            "training.seed": REPLACE, "training.max_steps": REPLACE,
            "training.checkpoint_every": UPDATE,  # changes when progress is saved, not the result
            # where the next job would run; the trained artifact stays valid
            "compute.instance_type": UPDATE, "compute.instance_count": UPDATE, "compute.spot": UPDATE,
            "compute.max_runtime": UPDATE, "compute.max_wait": UPDATE, "compute.volume_size_gb": UPDATE,
            **_COMMON,
            "training_code_hash": REPLACE,  # the training program's files
        },
        derived=("dataset_identity", "training_code_hash"), derive=_adapter_derive,
        references=_adapter_references, atomic=frozenset({"tags"}),
        provider_only={"compute.instance_type": "sagemaker", "compute.instance_count": "sagemaker",
                       "compute.spot": "sagemaker", "compute.max_wait": "sagemaker",
                       "compute.volume_size_gb": "sagemaker"},
        usage=_training_usage,
        new_version=lambda model: f"dataset.{model.dataset} gets a new version",
    ),
    Kind(
        name="deployment", section="deployments", short="ep", model=Deployment,
        modes={
            "base_model": REPLACE,
            "adapters": UPDATE,  # inference components / the adapter registry, no new endpoint
            "adapter_identities": UPDATE,  # a retrained adapter is swapped in place
            "compute.instance_type": UPDATE,  # a new endpoint config, no downtime
            "compute.count": UPDATE,
            "cache_size": UPDATE,  # the local server restarts with the new size
            "port": UPDATE,  # likewise
            "ttl": UPDATE,
            "idle_ttl": UPDATE,
            **_COMMON,
        },
        derived=("adapter_identities",), derive=_deployment_derive, references=_deployment_references,
        atomic=frozenset({"tags", "adapter_identities"}),
        provider_only={"compute.instance_type": "sagemaker", "compute.count": "sagemaker", "port": "local"},
        usage=_endpoint_usage,
        lifetime=("ttl", "idle_ttl"), ttl=_deployment_ttl, expiry=_deployment_expiry,
    ),
)}

SECTIONS = tuple(k.section for k in KINDS.values())
ADDRESS = re.compile(rf"^({'|'.join(KINDS)})\.([a-z0-9][a-z0-9-]*)$")


def resources(config: Config) -> dict[str, BaseModel]:
    """Every resource of the spec by address (`dataset.NAME`, `adapter.NAME`, ...), kinds in `KINDS` order."""
    out: dict[str, BaseModel] = {}
    for kind in KINDS.values():
        for name, model in getattr(config, kind.section).items():
            out[f"{kind.name}.{name}"] = model
    return out


def provider_inputs(kind: str, inputs: dict, provider: str) -> dict:
    """`inputs` (a resource's JSON form) without the fields `provider` does not use; a section left
    empty (a local deployment's `compute`) goes too."""
    out = dict(inputs)
    for path, owner in KINDS[kind].provider_only.items():
        if owner == provider:
            continue
        head, _, leaf = path.rpartition(".")
        if not head:
            out.pop(leaf, None)
        elif isinstance(out.get(head), dict):
            section = {k: v for k, v in out[head].items() if k != leaf}
            if section:
                out[head] = section
            else:
                out.pop(head)
    return out
