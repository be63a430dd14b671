"""Each resource kind, as data: which inputs force replacement and which change in place.

`FIELD_MODES[kind]` maps a dotted input path to `REPLACE` or `UPDATE`; the longest matching prefix
wins. Besides the spec's own fields, each kind has derived inputs the planner adds:
- dataset: `source_sha256`, the content hash of the JSONL (a changed file is a new dataset version);
- adapter: `dataset_identity` (the identity of the dataset version it trains on, so a replaced dataset
  replaces its adapters) and `training_code_hash` (the training program's files);
- deployment: `adapter_identities` (a retrained adapter is swapped in place).
A test walks every model field and fails when one is not classified here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from fastuner.config.models import Adapter, Dataset, Deployment

REPLACE = "replace"
UPDATE = "update"

MODELS: dict[str, type[BaseModel]] = {"dataset": Dataset, "adapter": Adapter, "deployment": Deployment}

FIELD_MODES: dict[str, dict[str, str]] = {
    "dataset": {
        "path": UPDATE,  # a moved file with the same bytes is the same version
        "task": REPLACE,
        "split": REPLACE,
        "checks": REPLACE,
        "tags": UPDATE,
        "depends_on": UPDATE,
        "source_sha256": REPLACE,
    },
    "adapter": {
        "base_model": REPLACE,
        "base_model_revision": REPLACE,
        "dataset": UPDATE,  # the name; what is trained on is `dataset_identity`
        "dataset_identity": REPLACE,
        "method": REPLACE,
        "lora": REPLACE,
        "training": REPLACE,
        "training.checkpoint_every": UPDATE,  # changes when progress is saved, not the result
        "compute": UPDATE,  # where the next job would run; the trained artifact stays valid
        "tags": UPDATE,
        "depends_on": UPDATE,
        "training_code_hash": REPLACE,
    },
    "deployment": {
        "base_model": REPLACE,
        "adapters": UPDATE,  # inference components / the adapter registry, no new endpoint
        "adapter_identities": UPDATE,
        "compute.instance_type": UPDATE,  # a new endpoint config, no downtime
        "compute.count": UPDATE,
        "cache_size": UPDATE,  # the local server restarts with the new size
        "port": UPDATE,  # likewise
        "ttl": UPDATE,
        "idle_ttl": UPDATE,
        "tags": UPDATE,
        "depends_on": UPDATE,
    },
}

# The inputs that set a resource's lifetime. An expiry records the values it happened under, and only a
# change to them made after that (or `apply --renew`) brings an expired resource back.
LIFETIME: dict[str, tuple[str, ...]] = {"deployment": ("ttl", "idle_ttl")}

DERIVED: dict[str, tuple[str, ...]] = {
    "dataset": ("source_sha256",),
    "adapter": ("dataset_identity", "training_code_hash"),
    "deployment": ("adapter_identities",),
}


@functools.lru_cache(maxsize=4096)
def mode_of(kind: str, path: str) -> str:
    """REPLACE or UPDATE for a dotted path; the longest classified prefix decides."""
    modes = FIELD_MODES[kind]
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        mode = modes.get(".".join(parts[:i]))
        if mode is not None:
            return mode
    raise KeyError(f"{kind} input `{path}` is not classified as update or replace in FIELD_MODES")


ATOMIC = frozenset({"tags", "adapter_identities"})  # maps compared and shown as one value


def leaf_paths(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Dotted paths of the leaves of nested dicts, in sorted key order; lists and scalars are leaves."""
    yield from flatten(value, prefix).items()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """`{dotted path: leaf}` of nested dicts (maps named in ATOMIC stay one leaf)."""
    out: dict[str, Any] = {}
    if isinstance(value, dict) and value and prefix.rpartition(".")[2] not in ATOMIC:
        _flatten(value, prefix, out)
    else:
        out[prefix] = value
    return out


def _flatten(value: dict[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """Each member of a non-empty dict to descend into, its leaves written to `out` (every plan
    flattens every resource's inputs: a call per dict, not per leaf)."""
    for k in sorted(value):
        v = value[k]
        path = f"{prefix}.{k}" if prefix else k
        if isinstance(v, dict) and v and k not in ATOMIC:
            _flatten(v, path, out)
        else:
            out[path] = v


def diff_paths(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Leaf paths whose values differ (present on one side only counts as differing)."""
    return diff_flat(flatten(before), flatten(after))


def diff_flat(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    if before == after:
        return []
    return sorted(p for p in before.keys() | after.keys() if after.get(p, _MISSING) != before.get(p, _MISSING))


_MISSING = object()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def identity(kind: str, inputs: Mapping[str, Any]) -> str:
    """Hash of the inputs that force replacement: equal identities mean interchangeable resources."""
    return identity_flat(kind, flatten(inputs))


def identity_flat(kind: str, flat: dict[str, Any]) -> str:
    forcing = {p: v for p, v in flat.items() if mode_of(kind, p) == REPLACE}
    return hashlib.sha256(f"{kind}:{canonical_json(forcing)}".encode()).hexdigest()[:16]


def physical_name(project: str, workspace: str, kind: str, name: str, ident: str, generation: int = 0) -> str:
    """Deterministic name of the cloud or local object (≤ 63 characters, SageMaker's limit).

    `generation` counts forced rebuilds of the same inputs (`--replace`): each gets a fresh name, so
    a rebuild never adopts what it replaces (and SageMaker job names, which cannot be reused, differ).
    """
    if generation:
        ident = hashlib.sha256(f"{ident}:{generation}".encode()).hexdigest()
    ws = "" if workspace == "default" else f"{workspace}-"
    short = {"dataset": "ds", "adapter": "ad", "deployment": "ep"}[kind]
    stem = f"{project}-{ws}{short}-{name}"
    if len(stem) > 63 - 9:  # truncated: keep names that share a prefix apart (the identity may not)
        stem = stem[: 63 - 9 - 7] + "-" + hashlib.sha256(stem.encode()).hexdigest()[:6]
    return f"{stem}-{ident[:8]}"
