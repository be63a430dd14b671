"""Refresh: read-only calls that tell the planner what exists now."""

from __future__ import annotations

import hashlib

from fastuner.config.loader import Spec
from fastuner.errors import Diagnostic, DiagnosticsError
from fastuner.plan.observed import Observation, Observed
from fastuner.providers.base import Provider, ProviderError
from fastuner.state.model import ResourceState, State, Status


def hash_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def dataset_sources(spec: Spec) -> dict[str, str]:
    """SHA-256 of every dataset's source file; a missing file is an error at its `path:` line."""
    out: dict[str, str] = {}
    errors: list[Diagnostic] = []
    for name, ds in spec.config.datasets.items():
        path = spec.resolve(ds.path)
        try:
            out[name] = hash_file(path)
        except FileNotFoundError:
            errors.append(Diagnostic.error(
                f"dataset.{name}: file not found: {ds.path}",
                f"Looked for {path}. Paths are relative to {spec.file.name}'s folder.",
                source=spec.source(("datasets", name, "path")), address=f"dataset.{name}"))
        except IsADirectoryError:
            errors.append(Diagnostic.error(
                f"dataset.{name}: {ds.path} is a folder, not a JSONL file",
                source=spec.source(("datasets", name, "path")), address=f"dataset.{name}"))
        except PermissionError:
            errors.append(Diagnostic.error(
                f"dataset.{name}: cannot read {ds.path} (permission denied)",
                source=spec.source(("datasets", name, "path")), address=f"dataset.{name}"))
    if errors:
        raise DiagnosticsError(errors)
    return out


def recorded_sources(state: State) -> dict[str, str]:
    """Dataset source hashes as state last recorded them (for work that must not need the files)."""
    return {rs.name: rs.inputs.get("source_sha256", "") for rs in state.resources.values() if rs.kind == "dataset"}


def refresh(spec: Spec | None, state: State, provider: Provider, *, hash_sources: bool = True) -> Observed:
    """Read every resource in state through its provider, one `read_many` per kind (a cloud provider
    covers many resources with one List call), and hash dataset sources (or, with
    `hash_sources=False`, take the hashes state recorded: `reap` runs where the data isn't)."""
    targets = [rs for rs in state.resources.values() if rs.status is not Status.EXPIRED]
    by_kind: dict[str, list[ResourceState]] = {}
    for rs in targets:
        by_kind.setdefault(rs.kind, []).append(rs)
    found: dict[str, Observation] = {}
    for kind, states in by_kind.items():
        try:
            found.update(provider.for_kind(kind).read_many(states))
        except ProviderError as exc:
            address = exc.address or states[0].address
            raise DiagnosticsError([Diagnostic.error(f"{address}: cannot read it: {exc.message}", exc.hint,
                                                     address=address)]) from None
    observations = {rs.address: found[rs.address] for rs in targets}
    sources = (dataset_sources(spec) if hash_sources else recorded_sources(state)) if spec is not None else {}
    # the work each adapter will do, for a priced provider's estimates (read from the dataset files)
    work = provider.training_work(sources) if provider.priced and provider.training_work and hash_sources \
        and spec is not None else {}
    return Observed(
        resources=observations,
        dataset_sources=sources,
        training_code_hash=provider.training_code_hash(),
        unsupported=dict(provider.unsupported),
        priced=provider.priced,
        prices=provider.price_book() if provider.price_book is not None else None,
        work=work,
    )
