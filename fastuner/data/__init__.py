"""Datasets: validate, deduplicate and split a JSONL file, and store the splits content-addressed.

    scan = scan_dataset("data.jsonl", Task.CLASSIFICATION, split=Split(train=0.8, validation=0.1, test=0.1, seed=42))
    store = LocalObjectStore(".fastuner/objects")
    outputs = write_splits(scan, store)
    store.materialize(outputs["splits"]["train"]["key"], channel_dir, "train.jsonl")

`scan_dataset` reads the file once and raises `DiagnosticsError` for bad input; it stores nothing.
`write_splits` reads it a second time and stores the split files and a manifest.
The task (`fastuner.config.tasks`), the split and the checks (`Split`, `DatasetChecks` in
`fastuner.config.models`) are the spec's own types; a worker gets what it needs of them as plain
values (`rows.Limits`).

The names below are imported when first used, so that a worker process, which needs only
`fastuner.data.rows`, starts without importing the rest (numpy included): that is most of the time
before a scan's first block is processed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_WHERE = {
    "NORMALISATION_VERSION": "rules",
    "SPLITS": "rules",
    "MAX_REPORTED_ERRORS": "scan",
    "DatasetScan": "scan",
    "RowCounts": "scan",
    "dataset_version": "scan",
    "scan_dataset": "scan",
    "InternalError": "split",
    "LocalObjectStore": "store",
    "ObjectStore": "store",
    "ObjectWriter": "store",
    "write_splits": "write",
}

__all__ = [
    "MAX_REPORTED_ERRORS",
    "NORMALISATION_VERSION",
    "SPLITS",
    "DatasetScan",
    "InternalError",
    "LocalObjectStore",
    "ObjectStore",
    "ObjectWriter",
    "RowCounts",
    "dataset_version",
    "scan_dataset",
    "write_splits",
]

if TYPE_CHECKING:
    from fastuner.data.rules import NORMALISATION_VERSION, SPLITS
    from fastuner.data.scan import MAX_REPORTED_ERRORS, DatasetScan, RowCounts, dataset_version, scan_dataset
    from fastuner.data.split import InternalError
    from fastuner.data.store import LocalObjectStore, ObjectStore, ObjectWriter
    from fastuner.data.write import write_splits


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
