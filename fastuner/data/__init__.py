"""Datasets: validate, deduplicate and split a JSONL file, and store the splits content-addressed.

    scan = scan_dataset("data.jsonl", "classification", split=SplitSpec(0.8, 0.1, 0.1, seed=42))
    outputs = write_splits(scan, LocalObjectStore(".fastuner/objects"))
    materialize(store, outputs["splits"]["train"]["key"], channel_dir, "train.jsonl")

`scan_dataset` reads the file once and raises `DiagnosticsError` for bad input; it stores nothing.
`write_splits` reads it a second time and stores the split files and a manifest.
This package imports only `fastuner.errors` from fastuner.
"""

from fastuner.data.rules import NORMALISATION_VERSION, SPLITS, TASKS, Rules, SplitSpec
from fastuner.data.scan import MAX_REPORTED_ERRORS, DatasetScan, RowCounts, dataset_version, scan_dataset
from fastuner.data.split import InternalError
from fastuner.data.store import LocalObjectStore, ObjectStore, ObjectWriter, materialize
from fastuner.data.write import write_splits

__all__ = [
    "MAX_REPORTED_ERRORS",
    "NORMALISATION_VERSION",
    "SPLITS",
    "TASKS",
    "DatasetScan",
    "InternalError",
    "LocalObjectStore",
    "ObjectStore",
    "ObjectWriter",
    "RowCounts",
    "Rules",
    "SplitSpec",
    "dataset_version",
    "materialize",
    "scan_dataset",
    "write_splits",
]
