"""`scan_dataset`: validate a JSONL dataset, deduplicate it and decide its splits, in one read.

Row rules (see `rows.py` for the normalised form):
- a row is a line; rows are numbered by line, from 1, counting blank lines, so a row number is the
  line an editor shows. A UTF-8 byte-order mark at the start of the file is ignored;
- blank (empty or whitespace-only) lines are skipped and counted, with one warning;
- every other line must be valid UTF-8 holding one JSON object with the task's fields: `input` and
  `target` (text_generation, qa) or `input` and `label` (classification), as strings; a label may
  also be a JSON integer, converted to its decimal string (one warning counts them). After
  normalisation `input` must have 1..max_input_chars characters, `target` 1..max_target_chars, a
  label at least one;
- other fields are ignored, with one warning naming them and how many rows carry each;
- rows are deduplicated on the normalised record; the first occurrence wins; at least
  `rules.min_rows` distinct records must remain.

All bad rows are found in the one pass; the first 20 are reported (file, row, column) followed by one
diagnostic saying how many more there are, raised together as a `DiagnosticsError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fastuner.config.models import DatasetChecks, Split
from fastuner.config.tasks import DEFINITIONS, Task, parse_task
from fastuner.data.blocks import (
    DEFAULT_BLOCK_BYTES,
    FileChanged,
    FileHash,
    default_workers,
    map_blocks,
    read_blocks,
    worker_pool,
)
from fastuner.data.report import (
    MAX_REPORTED_ERRORS,
    Reporter,
    plural,
    raise_row_errors,
    row_lines,
    row_warnings,
    split_warnings,
    too_few,
)
from fastuner.data.rows import BlockScan, Limits, scan_block
from fastuner.data.rules import NORMALISATION_VERSION, SPLITS, split_fractions
from fastuner.data.split import allocate, choose_splits, find_duplicates, strata_of
from fastuner.errors import Diagnostic, DiagnosticsError, relpath

__all__ = ["MAX_REPORTED_ERRORS", "DatasetScan", "Layout", "RowCounts", "dataset_version", "limits_for",
           "scan_dataset"]


@dataclass(frozen=True)
class RowCounts:
    lines: int  # every line of the file
    blank: int  # blank lines skipped
    records: int  # rows read (lines - blank)
    duplicates: int  # rows dropped as repeats of an earlier row
    distinct: int  # records kept (records - duplicates)

    def to_dict(self) -> dict:
        return {"lines": self.lines, "blank": self.blank, "records": self.records,
                "duplicates": self.duplicates, "distinct": self.distinct}


@dataclass(frozen=True)
class Layout:
    """Where each valid row sits and where it goes; what `write_splits` needs for its second pass."""

    block_bytes: int
    block_sizes: tuple[int, ...]
    block_valid: tuple[int, ...]  # valid rows per block
    block_lines: tuple[int, ...]  # line number of each block's first line, minus one
    block_line_counts: tuple[int, ...]
    blank_lines: tuple[array, ...]  # per block: blank lines (within the block); every other line is a row
    codes: bytes  # per valid row: 0 duplicate, 1 train, 2 validation, 3 test


@dataclass(frozen=True)
class DatasetScan:
    """A validated dataset and its split plan. `version` identifies exactly what `write_splits` stores."""

    path: str
    task: Task
    split: Split
    rules: DatasetChecks
    source_sha256: str
    source_bytes: int
    counts: RowCounts
    split_rows: dict[str, int]  # split -> records
    labels: dict[str, int] | None  # label -> distinct records (classification), sorted by label
    split_labels: dict[str, dict[str, int]] | None  # split -> label -> records (classification)
    warnings: tuple[Diagnostic, ...]
    version: str
    layout: Layout = field(repr=False, compare=False)

    def rows_in(self, split: str) -> list[int]:
        """Row numbers (file lines) of the records in `split`, or of the dropped duplicates for
        "duplicate", in file order."""
        code = {"duplicate": 0, **{name: i + 1 for i, name in enumerate(SPLITS)}}[split]
        codes = self.layout.codes
        out = []
        g = 0
        layout = self.layout
        for first_line, n_lines, blank in zip(layout.block_lines, layout.block_line_counts, layout.blank_lines,
                                              strict=True):
            for line in row_lines(n_lines, blank):
                if codes[g] == code:
                    out.append(first_line + line)
                g += 1
        return out

    def to_dict(self) -> dict:
        """The scan's figures as plain JSON-able values (no per-row data)."""
        return {
            "version": self.version,
            "task": self.task,
            "source": {"sha256": self.source_sha256, "bytes": self.source_bytes},
            "split_spec": self.split.model_dump(),
            "rules": self.rules.model_dump(),
            "normalisation": NORMALISATION_VERSION,
            "counts": self.counts.to_dict(),
            "splits": dict(self.split_rows),
            "labels": self.labels,
            "split_labels": self.split_labels,
        }


def scan_dataset(path: str | Path, task: Task | str, *, split: Split = Split(), rules: DatasetChecks = DatasetChecks(),
                 workers: int | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 address: str | None = None, fast: bool = True) -> DatasetScan:
    """Read `path` once: validate every row, hash the file, deduplicate and plan the splits.

    Raises `DiagnosticsError` for anything wrong with the file; stores nothing. `workers` processes
    validate blocks of `block_bytes` in parallel (default: one per core for a large file, none for a
    small one); the result is the same for any `workers` and `block_bytes`. `fast=False` runs the
    reference code only (`rows.py`, `split.py`) instead of the fast path (`fast.py`); the result is
    the same.
    """
    task = parse_task(task)
    shown = relpath(path)
    report = Reporter(shown, address)
    limits = limits_for(task, rules)
    file_hash = FileHash()
    with _open_dataset(path, shown, address) as file:
        opened = os.fstat(file.fileno())
        if workers is None:
            workers = default_workers(opened.st_size)
        with worker_pool(workers) as pool:
            results: list[BlockScan] = []
            block_sizes: list[int] = []
            jobs = read_blocks(file, block_bytes, file_hash)
            from fastuner.data import fast as fast_path  # numpy: only a scan needs it, not `plan`

            fast = fast and fast_path.available()
            try:
                scan = fast_path.scan_block_either if fast else scan_block
                for block, result in map_blocks(jobs, scan, lambda b: (limits, split.seed, b.index == 0),
                                                pool, workers, source=str(path)):
                    results.append(result)
                    block_sizes.append(block.size)
            except FileChanged:
                raise report.error(f"dataset file changed while it was being read: {shown}",
                                   "run again when nothing is writing to it") from None
            file.close()
            try:
                block_lines, n_lines, n_blank, n_records = _check_rows(results, file_hash.size, report)
            except DiagnosticsError:
                # a row cut short or mixed by a writer is not the file's fault: say what happened
                if _changed_since(path, opened):
                    raise report.error(f"dataset file changed while it was being read: {shown}",
                                       "run again when nothing is writing to it") from None
                raise
            if n_records >= 1 << 32:
                raise report.error(f"{n_records:,} rows are more than a dataset may have (4,294,967,295)")
            strata = strata_of(results, task.definition.classifies)
            fractions = split_fractions(split)
            dups = (fast_path.find_duplicates if fast else find_duplicates)(results, strata, fractions, pool)
            n_distinct = n_records - dups.count
            if n_distinct < rules.min_rows:
                raise report.error(*too_few(n_records, n_distinct, rules.min_rows))
            sizes = [allocate(c, fractions) for c in dups.distinct]
            codes = (fast_path.choose_splits if fast else choose_splits)(results, strata, dups, sizes, pool)

    totals = [sum(size[i] for size in sizes) for i in range(3)]
    stratum_sizes, label_names = dups.distinct, strata.names
    warnings = row_warnings(results, block_lines, dups, limits.second, report)
    warnings += split_warnings(label_names, stratum_sizes, sizes, fractions, report)
    split_rows = dict(zip(SPLITS, totals, strict=True))
    labels = split_labels = None
    if task.definition.classifies:
        order = sorted(range(len(label_names)), key=lambda i: label_names[i])
        labels = {label_names[i]: stratum_sizes[i] for i in order if stratum_sizes[i]}
        split_labels = {name: {label_names[i]: sizes[i][k] for i in order if sizes[i][k]}
                        for k, name in enumerate(SPLITS)}
    source_sha256 = file_hash.hexdigest()
    layout = Layout(
        block_bytes=block_bytes,
        block_sizes=tuple(block_sizes),
        block_valid=tuple(r.n_valid for r in results),
        block_lines=tuple(block_lines),
        block_line_counts=tuple(r.n_lines for r in results),
        blank_lines=tuple(r.blank_lines for r in results),
        codes=bytes(codes),
    )
    return DatasetScan(
        path=str(path), task=task, split=split, rules=rules,
        source_sha256=source_sha256, source_bytes=file_hash.size,
        counts=RowCounts(n_lines, n_blank, n_records, dups.count, n_distinct),
        split_rows=split_rows, labels=labels, split_labels=split_labels,
        warnings=tuple(warnings),
        version=dataset_version(source_sha256, task, split, rules),
        layout=layout,
    )


def limits_for(task: Task, rules: DatasetChecks) -> Limits:
    """What a worker needs of the task's definition and the checks, as plain values (a worker imports
    nothing from fastuner.config). A class label has no length limit. `other_tasks` names, for each
    other row field some task uses, that task and its family: a row carrying it gets a hint to switch."""
    definition = task.definition
    others: dict[str, tuple[str, str]] = {}
    for other, other_definition in DEFINITIONS.items():
        if other_definition.target_field != definition.target_field:
            others.setdefault(other_definition.target_field, (other_definition.family.value, other.value))
    return Limits(definition.target_field, definition.classifies, rules.max_input_chars,
                  None if definition.classifies else rules.max_target_chars,
                  tuple((name, family, task_name) for name, (family, task_name) in others.items()))


def dataset_version(source_sha256: str, task: Task, split: Split, rules: DatasetChecks) -> str:
    """A stable id of everything that decides the split files' bytes."""
    identity = {
        "format": "fastuner.dataset/1",
        "source_sha256": source_sha256,
        "task": task,
        "split": split.model_dump(),
        "rules": rules.model_dump(),
        "normalisation": NORMALISATION_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_rows(results: Sequence[BlockScan], size: int, report: Reporter) -> tuple:
    """Raise for an empty file, bad rows or no records; else (block first lines, lines, blank, records)."""
    if size == 0:
        raise report.error("dataset file is empty", "it must hold one JSON object per line")
    block_lines = [0]
    for result in results:
        block_lines.append(block_lines[-1] + result.n_lines)
    n_lines = block_lines.pop()
    raise_row_errors(results, block_lines, report)
    n_blank = sum(r.n_blank for r in results)
    n_records = n_lines - n_blank
    if n_records == 0:
        raise report.error("dataset file has no records",
                           f"its {n_lines:,} line{plural(n_lines)} {'is' if n_lines == 1 else 'are'} blank")
    return block_lines, n_lines, n_blank, n_records


def _changed_since(path: str | Path, opened: os.stat_result) -> bool:
    """Whether the file at `path` is no longer what was opened: replaced, resized or written to."""
    try:
        now = os.stat(path)
    except OSError:
        return True
    return (now.st_ino, now.st_size, now.st_mtime_ns) != (opened.st_ino, opened.st_size, opened.st_mtime_ns)


def _open_dataset(path: str | Path, shown: str, address: str | None):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise DiagnosticsError.single(f"dataset file not found: {shown}",
                                      f"no file at {Path(path).absolute()}", address=address) from None
    except IsADirectoryError:
        raise DiagnosticsError.single(f"dataset path is a directory: {shown}",
                                      "give the path of a JSONL file", address=address) from None
    except PermissionError:
        raise DiagnosticsError.single(f"dataset file is not readable: {shown}",
                                      "permission denied", address=address) from None


