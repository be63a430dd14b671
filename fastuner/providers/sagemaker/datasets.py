"""Datasets on the SageMaker provider: validated and split here, stored content-addressed in S3.

Each split is one object, `s3://BUCKET/PREFIX/datasets/<sha256>/data.jsonl`, and the folder holding it is
the split's SageMaker channel (`outputs["splits"][split]["uri"]`): a training job reads exactly the bytes
that were validated. The same bytes are never uploaded twice (a HEAD, then a conditional create), so
re-creating a version that is already stored (after state was lost, or in another workspace) makes
HEAD calls only and uploads nothing.

Refresh covers N datasets with ListObjectsV2 calls over the `datasets/` prefix, not one HEAD per object:
the keys wanted are sorted and each listing starts just before the first one not yet seen, so a dense
set of datasets costs one call per thousand objects and a sparse one at most a call per object.
Deleting removes the version's objects unless another resource in state still refers to them. Objects
are read, checked and deleted where state recorded them (`outputs["store"]`), even if the spec's bucket
or prefix changed since.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fastuner.aws.clients import AwsSession
from fastuner.aws.errors import AwsError, aws_errors
from fastuner.aws.names import join_key
from fastuner.data.rules import SPLITS
from fastuner.data.s3store import MULTIPART_THRESHOLD, PART_SIZE, S3ObjectStore
from fastuner.errors import DiagnosticsError
from fastuner.plan.model import Change
from fastuner.plan.observed import Observation, ObservationStatus
from fastuner.providers.base import Context, Outcome, ProviderError, ResourceProvider
from fastuner.providers.datasets import scan_inputs
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.state.model import ResourceState

NAMESPACE = "datasets"
FILENAME = "data.jsonl"
LIST_PAGE = 1000  # keys per ListObjectsV2 call (S3's maximum)
_ROOT = re.compile(rf"s3://([^/]+)/(?:(.+)/)?{NAMESPACE}/")


class SageMakerDatasets(ResourceProvider):
    kind = "dataset"

    def __init__(self, session: AwsSession, bucket: str, prefix: str, spec_dir: Path, *,
                 kms_key_id: str | None = None, part_size: int = PART_SIZE,
                 multipart_threshold: int = MULTIPART_THRESHOLD, list_page: int = LIST_PAGE) -> None:
        self.session = session
        self.spec_dir = spec_dir
        self.list_page = list_page
        self._options: dict[str, Any] = {"kms_key_id": kms_key_id, "part_size": part_size,
                                         "multipart_threshold": multipart_threshold}
        self.store = self._make_store(bucket, prefix)
        self._stores = {self.store.root: self.store}

    # --- reading -----------------------------------------------------------------------------------

    def read(self, rs: ResourceState) -> Observation:
        return self.read_many([rs])[rs.address]

    def read_many(self, states: Sequence[ResourceState]) -> dict[str, Observation]:
        found: dict[str, Observation] = {}
        wanted: dict[str, tuple[S3ObjectStore, list[str]]] = {}
        for rs in states:
            keys = _keys(rs.outputs)
            store = self._store_of(rs.outputs, keys)
            if not keys:
                found[rs.address] = Observation(ObservationStatus.MISSING, detail="no stored version recorded")
            elif store is None:
                found[rs.address] = Observation(
                    ObservationStatus.MISSING,
                    detail=f"stored at {rs.outputs.get('store') or 'an unknown place'}, not in S3 by this provider")
            else:
                wanted[rs.address] = (store, keys)
        listed: dict[str, set[str]] = {}
        for store in {store.root: store for store, _ in wanted.values()}.values():
            keys = sorted({k for s, ks in wanted.values() if s is store for k in ks})
            address = next(a for a, (s, _) in wanted.items() if s is store)
            try:
                listed[store.root] = self._present(store, keys)
            except ProviderError as exc:
                exc.address = address
                raise
        for rs in states:
            if rs.address not in wanted:
                continue
            store, keys = wanted[rs.address]
            gone = [k for k in keys if k not in listed[store.root]]
            found[rs.address] = Observation(
                ObservationStatus.MISSING, detail=f"{len(gone)} stored object(s) are gone from {store.root}") \
                if gone else Observation(ObservationStatus.READY, outputs=rs.outputs)
        return found

    def read_split(self, rs: ResourceState, split: str) -> bytes:
        outputs = rs.outputs or {}
        key = ((outputs.get("splits") or {}).get(split) or {}).get("key")
        store = self._store_of(outputs, [key] if key else [])
        where = store.root if store is not None else outputs.get("store") or self.store.root
        lost = ProviderError(f"{rs.address}'s {split} split ({key}) is missing from {where}",
                             f"Re-create it: fastuner apply --replace {rs.address}")
        if not key or store is None:
            raise lost
        with provider_errors(f"reading {rs.address}'s {split} split"):
            try:
                return store.get(key)
            except AwsError:
                raise
            except DiagnosticsError:  # the object is gone
                raise lost from None

    # --- writing -----------------------------------------------------------------------------------

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
        ctx.progress(f"storing splits in {self.store.root}")
        from fastuner.data.write import write_splits  # with the scan: not loaded for a plan

        with provider_errors(f"storing {change.address} in {self.store.root}"):
            outputs = write_splits(scan, _Labelled(self.store, ctx.progress), address=change.address)
        for split in outputs["splits"].values():
            split["uri"] = self.store.folder_uri(split["key"])
        outputs["store"] = self.store.root
        return Outcome.ready(outputs)

    def update(self, change: Change, prior: ResourceState, ctx: Context) -> Outcome:
        # Only the path (same bytes elsewhere), tags and depends_on change in place: nothing to store.
        return Outcome.ready(prior.outputs)

    def delete(self, rs: ResourceState, ctx: Context) -> None:
        keys = _keys(rs.outputs)
        store = self._store_of(rs.outputs, keys)
        if store is None:  # not stored in S3 by this provider: nothing of it here to delete
            return
        keep = ctx.referenced()
        with provider_errors(f"deleting {rs.address} from {store.root}"):
            try:
                for key in keys:
                    if key not in keep:
                        store.delete(key)
            except AwsError as exc:
                if exc.code != "NoSuchBucket":  # the bucket is gone, and its objects with it
                    raise

    # --- stores ------------------------------------------------------------------------------------

    def _make_store(self, bucket: str, prefix: str) -> S3ObjectStore:
        return S3ObjectStore(self.session, bucket, prefix, namespace=NAMESPACE, filename=FILENAME,
                             **self._options)

    def _store_of(self, outputs: dict[str, Any], keys: Sequence[str]) -> S3ObjectStore | None:
        """The store state recorded the version in (the spec's, unless its bucket or prefix changed since);
        None when the version is not in S3 by this provider (another provider's store, foreign keys)."""
        root = outputs.get("store") or self.store.root
        store = self._stores.get(root)
        if store is None:
            m = _ROOT.fullmatch(str(root))
            if m is None:
                return None
            try:
                store = self._make_store(m.group(1), m.group(2) or "")
            except DiagnosticsError:  # not a bucket name
                return None
            if store.root != root:
                return None
            self._stores[root] = store
        try:
            for key in keys:
                store.check_key(key)
        except ValueError:
            return None
        return store

    def _present(self, store: S3ObjectStore, keys: list[str]) -> set[str]:
        """Which of `keys` (sorted) exist, by listing: each ListObjectsV2 starts just before the first key
        not yet covered by an earlier page, and an empty page that says there is more (moto gives those)
        is followed by its continuation token."""
        base = join_key(store.prefix, store.namespace) + "/"
        wanted = [store.object_key(k) for k in keys]
        seen: set[str] = set()
        request: dict[str, Any] = {"Bucket": store.bucket, "Prefix": base, "MaxKeys": self.list_page}
        i = 0
        after = ""  # the last key listed so far
        with provider_errors(f"listing {store.root}"), aws_errors(f"listing {store.root}", "s3"):
            while i < len(wanted):
                if "ContinuationToken" not in request:
                    request["StartAfter"] = max(wanted[i][:-1], after)  # lists from wanted[i] on
                page = store.s3.list_objects_v2(**request)
                listed = [item["Key"] for item in page.get("Contents") or []]
                seen.update(listed)
                if not page.get("IsTruncated"):
                    break
                request.pop("ContinuationToken", None)
                if listed:
                    after = max(after, listed[-1])
                    while i < len(wanted) and wanted[i] <= after:
                        i += 1
                elif page.get("NextContinuationToken"):
                    request.pop("StartAfter", None)
                    request["ContinuationToken"] = page["NextContinuationToken"]
                else:
                    raise ProviderError(f"S3 listed {store.root} as truncated without saying where to go on",
                                        "Run again; this is a problem on S3's side if it persists.")
        return {k for k, object_key in zip(keys, wanted, strict=True) if object_key in seen}


def _keys(outputs: dict[str, Any]) -> list[str]:
    keys = [s["key"] for s in (outputs.get("splits") or {}).values() if s.get("key")]
    if outputs.get("manifest_key"):
        keys.append(outputs["manifest_key"])
    return keys


class _Labelled:
    """The store as `write_splits` sees it, each upload's progress reported under its name: write_splits
    opens one writer per split in `SPLITS` order, then stores the manifest with `put_bytes`."""

    def __init__(self, store: S3ObjectStore, say: Callable[[str], None]) -> None:
        self._store = store
        self._say = say
        self._opened = 0

    def open_writer(self) -> Any:
        label = f"{SPLITS[self._opened]} split" if self._opened < len(SPLITS) else "object"
        self._opened += 1
        return self._store.open_writer(progress=UploadProgress(self._say, label))

    def put_bytes(self, data: bytes) -> str:
        return self._store.put_bytes(data, progress=UploadProgress(self._say, "manifest"))

    def put_file(self, path: str | Path) -> str:
        return self._store.put_file(path, progress=UploadProgress(self._say, Path(path).name))

    def get(self, key: str) -> bytes:
        return self._store.get(key)

    def exists(self, key: str) -> bool:
        return self._store.exists(key)

    def materialize(self, key: str, dest_dir: str | Path, name: str) -> Path:
        return self._store.materialize(key, dest_dir, name)

    def delete(self, key: str) -> None:
        self._store.delete(key)


class UploadProgress:
    """Turns an upload's `(sent, total)` into lines such as "uploading train split 45% (12.0 MB of
    26.7 MB)", at most one per `step` percent and per `interval` seconds, and always the last one: apply
    prints every new progress text in CI, so a large upload must not print a line per part."""

    def __init__(self, say: Callable[[str], None], label: str, *, step: int = 10, interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.say = say
        self.label = label
        self.step = step
        self.interval = interval
        self.clock = clock
        self._percent: int | None = None
        self._at = 0.0

    def __call__(self, sent: int, total: int) -> None:
        percent = 100 if total <= 0 else min(100, sent * 100 // total)
        now = self.clock()
        if self._percent is not None:
            if percent >= 100:
                if self._percent >= 100:
                    return
            elif percent < self._percent + self.step or now - self._at < self.interval:
                return
        self._percent, self._at = percent, now
        self.say(f"uploading {self.label} {percent}% ({format_bytes(sent)} of {format_bytes(total)})")


def format_bytes(n: int) -> str:
    """Decimal units, as S3 and the AWS console count: 512 B, 1.5 kB, 12.0 MB, 26.7 GB."""
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")
