"""`write_splits`: store a scanned dataset's split files and its manifest, content-addressed.

A second streaming pass over the source file renders each kept record's normalised line into its
split; the three files stream into the store while being hashed. Nothing is committed unless the
source still has the bytes the scan validated (same SHA-256, same blocks, same valid rows): a file
edited between `plan` and `apply` is an error, not a silently different dataset.
"""

from __future__ import annotations

import json
import os
import tempfile

from fastuner.data.blocks import (
    FileChanged,
    FileHash,
    InlineExecutor,
    default_workers,
    map_blocks,
    read_blocks,
    worker_pool,
)
from fastuner.data.rows import render_block, render_block_to_file
from fastuner.data.rules import NORMALISATION_VERSION, SPLITS
from fastuner.data.scan import DatasetScan, limits_for
from fastuner.data.split import InternalError
from fastuner.data.store import ObjectStore
from fastuner.errors import DiagnosticsError, relpath

MANIFEST_FORMAT = 1


def write_splits(scan: DatasetScan, store: ObjectStore, *, workers: int | None = None,
                 address: str | None = None) -> dict:
    """Store `train.jsonl`, `validation.jsonl`, `test.jsonl` and a manifest; return the outputs to
    record in state (plain JSON values).

    Each split file holds that split's records in file order, one normalised JSON object per line
    (the task's row fields, `input` first), UTF-8, each line ending in a newline. An empty
    split is stored as an empty object. The manifest (JSON) names each split's key, rows, SHA-256 and
    label distribution; it is stored content-addressed too, so the same dataset version always has
    the same manifest key.
    """
    layout = scan.layout
    limits = limits_for(scan.task, scan.rules)
    starts = [0]
    for n in layout.block_valid:
        starts.append(starts[-1] + n)

    def args(block):
        if block.index < len(layout.block_valid):
            codes = layout.codes[starts[block.index]:starts[block.index + 1]]
        else:
            codes = b""
        return limits, block.index == 0, codes

    if workers is None:
        workers = default_workers(scan.source_bytes)
    writers: dict = {}
    lines = dict.fromkeys(SPLITS, 0)
    file_hash = FileHash()
    changed = DiagnosticsError.single(
        f"dataset file changed since it was validated: {relpath(scan.path)}",
        "run plan again to validate the new contents", address=address)
    try:
        for name in SPLITS:
            writers[name] = store.open_writer()
        try:
            source = open(scan.path, "rb")  # noqa: SIM115 - closed by the with block below
        except OSError:
            raise changed from None
        # The staging folder outlives the pool: the pool's shutdown waits for every worker's file.
        with tempfile.TemporaryDirectory(prefix="fastuner-splits-") as staging, source, worker_pool(workers) as pool:
            n_blocks = 0
            if isinstance(pool, InlineExecutor):
                render, render_args = render_block, args
            else:  # workers hand their lines over in a file: a pipe would cost more CPU than rendering
                render, render_args = render_block_to_file, lambda block: (*args(block), staging, block.index)
            blocks = map_blocks(read_blocks(source, layout.block_bytes, file_hash), render, render_args, pool,
                                workers, source=str(scan.path))
            for block, (parts, n_valid) in _unchanged(blocks, changed):
                n_blocks += 1
                if (block.index >= len(layout.block_sizes) or block.size != layout.block_sizes[block.index]
                        or n_valid != layout.block_valid[block.index]):
                    raise changed
                if isinstance(parts, tuple):
                    parts = _read_rendered(staging, block.index, parts)
                for name, data in zip(SPLITS, parts, strict=True):
                    if data:
                        writers[name].write(data)
                        lines[name] += data.count(b"\n")
        if n_blocks != len(layout.block_sizes) or file_hash.hexdigest() != scan.source_sha256:
            raise changed
        if lines != scan.split_rows:
            raise InternalError(f"wrote {lines} rows, the scan planned {scan.split_rows}")
        splits = {}
        for name in SPLITS:
            writer = writers[name]
            splits[name] = {"key": writer.commit(), "sha256": writer.sha256, "bytes": writer.size,
                            "rows": scan.split_rows[name]}
            if scan.split_labels is not None:
                splits[name]["labels"] = scan.split_labels[name]
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise

    manifest = {
        "format_version": MANIFEST_FORMAT,
        "kind": "fastuner.dataset",
        "version": scan.version,
        "task": scan.task,
        "normalisation": NORMALISATION_VERSION,
        "source": {"sha256": scan.source_sha256, "bytes": scan.source_bytes},
        "split_spec": scan.split.model_dump(),
        "rules": scan.rules.model_dump(),
        "counts": scan.counts.to_dict(),
        "labels": scan.labels,
        "splits": splits,
    }
    manifest_key = store.put_bytes(json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
    return {
        "version": scan.version,
        "manifest_key": manifest_key,
        "source_sha256": scan.source_sha256,
        "counts": scan.counts.to_dict(),
        "labels": scan.labels,
        "splits": splits,
    }


def _unchanged(blocks, changed: DiagnosticsError):
    """`blocks`, raising `changed` when a worker finds that the file is being changed."""
    try:
        yield from blocks
    except FileChanged:
        raise changed from None


def _read_rendered(staging: str, index: int, sizes: tuple[int, ...]) -> list[bytes]:
    path = os.path.join(staging, str(index))
    with open(path, "rb") as rendered:
        parts = [rendered.read(size) for size in sizes]
    os.unlink(path)
    return parts
