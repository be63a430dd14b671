"""Datasets on the local provider: validate, split and store content-addressed under the work folder.

The same bytes are never stored twice (keys are SHA-256 of the content), so re-creating a dataset
version that already exists writes nothing. Deleting removes the version's objects unless another
resource in state still refers to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastuner.data.store import LocalObjectStore, ObjectStore
from fastuner.errors import DiagnosticsError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, ProviderError, ResourceProvider
from fastuner.providers.datasets import scan_inputs
from fastuner.state.model import ResourceState


class LocalDatasets(ResourceProvider):
    kind = "dataset"

    def __init__(self, work_dir: Path, spec_dir: Path) -> None:
        self.store: ObjectStore = LocalObjectStore(work_dir / "objects")
        self.spec_dir = spec_dir

    def _keys(self, outputs: dict[str, Any]) -> list[str]:
        keys = [s["key"] for s in (outputs.get("splits") or {}).values() if s.get("key")]
        if outputs.get("manifest_key"):
            keys.append(outputs["manifest_key"])
        return keys

    def read(self, rs: ResourceState) -> Observation:
        keys = self._keys(rs.outputs)
        if not keys:
            return Observation(ObservationStatus.MISSING, detail="no stored version recorded")
        gone = [k for k in keys if not self.store.exists(k)]
        if gone:
            return Observation(ObservationStatus.MISSING, detail=f"{len(gone)} stored object(s) are gone from {self.store.root}")
        return Observation(ObservationStatus.READY, outputs=rs.outputs)

    def create(self, change: Change, ctx: Context) -> Outcome:
        inputs = change.after or {}
        ctx.progress("validating rows")
        try:
            scan = scan_inputs(self.spec_dir, inputs, change.address)
        except DiagnosticsError as exc:
            first = exc.diagnostics[0]
            more = f" (and {len(exc.diagnostics) - 1} more problems; run `fastuner validate`)" \
                if len(exc.diagnostics) > 1 else ""
            where = f"{first.source}: " if first.source else ""
            raise ProviderError(f"{where}{first.summary}{more}", first.detail) from None
        if inputs.get("source_sha256") and scan.source_sha256 != inputs["source_sha256"]:
            raise ProviderError(f"{inputs['path']} changed since the plan was made",
                                "Run `fastuner plan` again to review the new version.")
        ctx.progress("storing splits")
        from fastuner.data.write import write_splits  # with the scan: not loaded for a plan

        try:
            outputs = write_splits(scan, self.store, address=change.address)
        except DiagnosticsError as exc:
            raise ProviderError(exc.diagnostics[0].summary, exc.diagnostics[0].detail) from None
        outputs["store"] = str(self.store.root)
        return Outcome.ready(outputs)

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        # Only the path (same bytes elsewhere), tags and depends_on change in place: nothing to store.
        return Outcome.ready(prior.outputs)

    def read_split(self, rs: ResourceState, split: str) -> bytes:
        key = (((rs.outputs or {}).get("splits") or {}).get(split) or {}).get("key")
        if not key or not self.store.exists(key):
            raise ProviderError(f"{rs.address}'s {split} split ({key}) is missing from {self.store.root}",
                                f"Re-create it: fastuner apply --replace {rs.address}")
        return self.store.get(key)

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        keep = ctx.referenced()
        for key in self._keys(rs.outputs):
            if key in keep:
                continue
            self.store.delete(key)
