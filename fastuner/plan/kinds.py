"""Identities over the kind declarations (config/kinds.py): inputs flattened to dotted leaf paths,
classified by their kind's `modes`, hashed into identities and physical names.

An identity hashes the inputs that force replacement, the derived ones included (a dataset's
`source_sha256`, an adapter's `dataset_identity`, ...), so a replaced upstream replaces what is built
from it; equal identities mean interchangeable resources.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from fastuner.config.kinds import KINDS, REPLACE


@functools.lru_cache(maxsize=4096)
def mode_of(kind: str, path: str) -> str:
    """REPLACE or UPDATE for a dotted path; the longest classified prefix decides."""
    modes = KINDS[kind].modes
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        mode = modes.get(".".join(parts[:i]))
        if mode is not None:
            return mode
    raise KeyError(f"{kind} input `{path}` is not classified as update or replace in its Kind's modes (config/kinds.py)")


ATOMIC = frozenset(path for kind in KINDS.values() for path in kind.atomic)  # maps kept as one value


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
    short = KINDS[kind].short
    stem = f"{project}-{ws}{short}-{name}"
    if len(stem) > 63 - 9:  # truncated: keep names that share a prefix apart (the identity may not)
        stem = stem[: 63 - 9 - 7] + "-" + hashlib.sha256(stem.encode()).hexdigest()[:6]
    return f"{stem}-{ident[:8]}"
