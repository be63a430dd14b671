"""Datasets on the local provider: validate, split and store content-addressed under the work folder.

The same bytes are never stored twice (keys are SHA-256 of the content), so re-creating a dataset
version that already exists writes nothing. Deleting removes the version's objects unless another
resource in state still refers to them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastuner.data.rules import Rules, SplitSpec
from fastuner.data.store import LocalObjectStore
from fastuner.errors import DiagnosticsError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation
from fastuner.providers.base import Context, Outcome, ProviderError
from fastuner.state.model import ResourceState

if TYPE_CHECKING:
    from fastuner.data.scan import DatasetScan


def scan_inputs(spec_dir: Path, inputs: dict[str, Any], address: str | None = None) -> DatasetScan:
    """Validate the dataset described by resolved inputs (the spec's dataset fields). The scanning
    modules load here, not with the provider: `plan` reads stored versions and scans nothing."""
    from fastuner.data.scan import scan_dataset

    path = Path(inputs["path"])
    path = path if path.is_absolute() else spec_dir / path
    split = SplitSpec(**inputs.get("split", {}))
    rules = Rules(**inputs.get("checks", {}))
    return scan_dataset(path, inputs["task"], split=split, rules=rules, address=address)


def describe_scan(scan: DatasetScan) -> str:
    c = scan.counts
    parts = [f"{c.records} rows"]
    if c.duplicates:
        parts[0] += f", {c.duplicates} duplicate{'s' if c.duplicates != 1 else ''} dropped"
    parts.append(" / ".join(f"{name} {n}" for name, n in scan.split_rows.items()))
    if scan.labels:
        parts.append(f"{len(scan.labels)} labels")
    return "; ".join(parts)


def _describe_outputs(outputs: dict[str, Any]) -> str:
    counts = outputs.get("counts", {})
    splits = outputs.get("splits", {})
    text = f"{counts.get('distinct', '?')} distinct rows; " + " / ".join(
        f"{name} {s.get('rows', '?')}" for name, s in splits.items())
    if outputs.get("labels"):
        text += f"; {len(outputs['labels'])} labels"
    return text


class LocalDatasets:
    kind = "dataset"

    def __init__(self, work_dir: Path, spec_dir: Path) -> None:
        self.store = LocalObjectStore(work_dir / "objects")
        self.spec_dir = spec_dir

    def _keys(self, outputs: dict[str, Any]) -> list[str]:
        keys = [s["key"] for s in (outputs.get("splits") or {}).values() if s.get("key")]
        if outputs.get("manifest_key"):
            keys.append(outputs["manifest_key"])
        return keys

    def read(self, rs: ResourceState) -> Observation:
        keys = self._keys(rs.outputs)
        if not keys:
            return Observation("missing", detail="no stored version recorded")
        gone = [k for k in keys if not self.store.exists(k)]
        if gone:
            return Observation("missing", detail=f"{len(gone)} stored object(s) are gone from {self.store.root}")
        return Observation("ready", outputs=rs.outputs)

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
        ctx.progress(f"storing splits ({describe_scan(scan)})")
        from fastuner.data.write import write_splits

        try:
            outputs = write_splits(scan, self.store, address=change.address)
        except DiagnosticsError as exc:
            raise ProviderError(exc.diagnostics[0].summary, exc.diagnostics[0].detail) from None
        outputs["store"] = str(self.store.root)
        outputs["summary"] = describe_scan(scan)
        return Outcome.ready(outputs)

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        # Only the path (same bytes elsewhere), tags and depends_on change in place: nothing to store.
        return Outcome.ready(prior.outputs)

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        keep = ctx.referenced()
        for key in self._keys(rs.outputs):
            if key in keep:
                continue
            self.store.path(key).unlink(missing_ok=True)
