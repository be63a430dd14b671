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
from functools import partial
from pathlib import Path

from fastuner.data.blocks import (
    DEFAULT_BLOCK_BYTES,
    FileHash,
    default_workers,
    map_blocks,
    read_blocks,
    worker_pool,
)
from fastuner.data.rows import PARTITIONS, BlockScan, Limits, RowError, scan_block
from fastuner.data.rules import NORMALISATION_VERSION, SPLITS, Rules, SplitSpec, check_task, second_field
from fastuner.data.split import (
    STRATUM_SHIFT,
    InternalError,
    allocate,
    assign_candidates,
    check_disjoint,
    dedupe_partition,
    every_row_of,
    partition_slices,
    record_of,
    thresholds_for,
)
from fastuner.errors import Diagnostic, DiagnosticsError, Source, relpath

MAX_REPORTED_ERRORS = 20
_MAX_SPLIT_WARNINGS = 20


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
    task: str
    split: SplitSpec
    rules: Rules
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
            for line in _row_lines(n_lines, blank):
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
            "split_spec": self.split.to_dict(),
            "rules": self.rules.to_dict(),
            "normalisation": NORMALISATION_VERSION,
            "counts": self.counts.to_dict(),
            "splits": dict(self.split_rows),
            "labels": self.labels,
            "split_labels": self.split_labels,
        }


def scan_dataset(path: str | Path, task: str, *, split: SplitSpec = SplitSpec(), rules: Rules = Rules(),
                 workers: int | None = None, block_bytes: int = DEFAULT_BLOCK_BYTES,
                 address: str | None = None) -> DatasetScan:
    """Read `path` once: validate every row, hash the file, deduplicate and plan the splits.

    Raises `DiagnosticsError` for anything wrong with the file; stores nothing. `workers` processes
    validate blocks of `block_bytes` in parallel (default: one per core for a large file, none for a
    small one); the result is the same for any `workers` and `block_bytes`.
    """
    check_task(task)
    shown = relpath(path)
    report = _Reporter(shown, address)
    limits = Limits(task, rules.max_input_chars,
                    None if task == "classification" else rules.max_target_chars)
    file_hash = FileHash()
    with _open_dataset(path, shown, address) as file:
        if workers is None:
            workers = default_workers(os.fstat(file.fileno()).st_size, block_bytes)
        with worker_pool(workers) as pool:
            results: list[BlockScan] = []
            block_sizes: list[int] = []
            jobs = read_blocks(file, block_bytes, file_hash)
            for block, result in map_blocks(jobs, scan_block, lambda b: (limits, split.seed, b.index == 0), pool):
                results.append(result)
                block_sizes.append(block.size)
            file.close()
            rows = _check_rows(results, file_hash.size, report)
            plan = _plan_splits(results, task, split, rules, pool, report)

    block_lines, n_lines, n_blank, n_records = rows
    dups = plan.duplicates
    n_distinct = n_records - dups.count
    stratum_sizes, sizes, codes, totals = plan.stratum_sizes, plan.sizes, plan.codes, plan.totals
    label_names = plan.label_names
    warnings = _row_warnings(results, block_lines, dups, task, report)
    warnings += _split_warnings(label_names, stratum_sizes, sizes, split.fractions(), report)
    split_rows = dict(zip(SPLITS, totals, strict=True))
    labels = split_labels = None
    if task == "classification":
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


def dataset_version(source_sha256: str, task: str, split: SplitSpec, rules: Rules) -> str:
    """A stable id of everything that decides the split files' bytes."""
    identity = {
        "format": "fastuner.dataset/1",
        "source_sha256": source_sha256,
        "task": task,
        "split": split.to_dict(),
        "rules": rules.to_dict(),
        "normalisation": NORMALISATION_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _check_rows(results: Sequence[BlockScan], size: int, report: _Reporter) -> tuple:
    """Raise for an empty file, bad rows or no records; else (block first lines, lines, blank, records)."""
    if size == 0:
        raise report.error("dataset file is empty", "it must hold one JSON object per line")
    block_lines = [0]
    for result in results:
        block_lines.append(block_lines[-1] + result.n_lines)
    n_lines = block_lines.pop()
    _raise_row_errors(results, block_lines, report)
    n_blank = sum(r.n_blank for r in results)
    n_records = n_lines - n_blank
    if n_records == 0:
        raise report.error("dataset file has no records",
                           f"its {n_lines:,} line{_s(n_lines)} {'is' if n_lines == 1 else 'are'} blank")
    return block_lines, n_lines, n_blank, n_records


@dataclass
class _Duplicates:
    count: int
    example: tuple[int, int] | None  # (a duplicate's ordinal, the ordinal of the row it repeats)


@dataclass
class _SplitPlan:
    label_names: list[str]
    duplicates: _Duplicates
    stratum_sizes: list[int]  # distinct records per stratum
    sizes: list[tuple[int, int, int]]  # (train, validation, test) per stratum
    totals: list[int]
    codes: bytearray


def _plan_splits(results: Sequence[BlockScan], task: str, split: SplitSpec, rules: Rules, pool,
                 report: _Reporter) -> _SplitPlan:
    """Deduplicate and assign splits (see split.py), raising if too few distinct records remain."""
    classification = task == "classification"
    label_names, label_maps = _merge_labels(results) if classification else ([], None)
    if classification:
        raw = [0] * len(label_names)
        for result, label_map in zip(results, label_maps, strict=True):
            for local, count in enumerate(result.label_counts):
                raw[label_map[local]] += count
    else:
        raw = [sum(r.n_valid for r in results)]
    fractions = split.fractions()
    # Candidate thresholds from the counts before deduplication, so that one pass over the partitions
    # both deduplicates and collects candidates; a stratum left short is collected again in full.
    thresholds = thresholds_for([sum(allocate(c, fractions)[1:]) for c in raw], raw)
    slices = [partition_slices(results, label_maps, p) for p in range(PARTITIONS)]
    parts = [f.result() for f in [pool.submit(dedupe_partition, s, thresholds) for s in slices]]

    n_valid = sum(r.n_valid for r in results)
    keep = bytearray(b"\x01") * n_valid
    dropped_by_stratum = [0] * len(raw)
    count = 0
    example = None
    for part in parts:
        count += len(part.dropped)
        for g in part.dropped:
            keep[g] = 0
        for s, n in part.dropped_by_stratum.items():
            dropped_by_stratum[s] += n
        if part.example and (example is None or part.example < example):
            example = part.example
    if n_valid - count < rules.min_rows:
        raise report.error(*_too_few(n_valid, n_valid - count, rules.min_rows))

    stratum_sizes = [c - d for c, d in zip(raw, dropped_by_stratum, strict=True)]
    sizes = [allocate(c, fractions) for c in stratum_sizes]
    codes = bytearray(keep)  # 1 (train) for every kept row, 0 for duplicates
    candidates = [c for part in parts for c in part.candidates]
    short = assign_candidates(candidates, keep, sizes, codes)
    if short:
        candidates = [c for c in candidates if c >> STRATUM_SHIFT not in short]
        everything = every_row_of(short, len(sizes))
        more = [c for f in [pool.submit(dedupe_partition, s, everything, False) for s in slices]
                for c in f.result().candidates]
        only_short = [size if s in short else (0, 0, 0) for s, size in enumerate(sizes)]
        if assign_candidates(more, keep, only_short, codes):
            raise InternalError(f"strata {sorted(short)} have fewer rows than planned")
        candidates = sorted(candidates + more)
    totals = [sum(s[i] for s in sizes) for i in range(3)]
    check_disjoint(candidates, codes, totals, partial(record_of, results))
    return _SplitPlan(label_names, _Duplicates(count, example), stratum_sizes, sizes, totals, codes)


@dataclass(frozen=True)
class _Reporter:
    file: str
    address: str | None

    def error(self, summary: str, detail: str = "", line: int | None = None,
              column: int | None = None) -> DiagnosticsError:
        return DiagnosticsError([self.diagnostic(summary, detail, line, column)])

    def diagnostic(self, summary: str, detail: str = "", line: int | None = None,
                   column: int | None = None) -> Diagnostic:
        return Diagnostic.error(summary, detail, source=Source(self.file, line, column), address=self.address)

    def warning(self, summary: str, detail: str = "", line: int | None = None) -> Diagnostic:
        return Diagnostic.warning(summary, detail, source=Source(self.file, line), address=self.address)


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


def _raise_row_errors(results: Sequence[BlockScan], block_lines: Sequence[int], report: _Reporter) -> None:
    total = sum(r.n_errors for r in results)
    if not total:
        return
    diagnostics = []
    for result, first_line in zip(results, block_lines, strict=True):
        for error in result.errors:
            if len(diagnostics) == MAX_REPORTED_ERRORS:
                break
            diagnostics.append(_row_diagnostic(error, first_line, report))
    if total > len(diagnostics):
        more = total - len(diagnostics)
        diagnostics.append(report.diagnostic(
            f"… and {more:,} more bad row{_s(more)} ({total:,} in all)",
            f"only the first {MAX_REPORTED_ERRORS} are listed; fix them and run again to see the rest"))
    raise DiagnosticsError(diagnostics)


def _row_diagnostic(error: RowError, first_line: int, report: _Reporter) -> Diagnostic:
    line = first_line + error.line
    detail = error.detail.replace("of the row", f"of row {line}")
    return report.diagnostic(error.summary, detail, line, error.column)


def _merge_labels(results: Sequence[BlockScan]) -> tuple[list[str], list[list[int]]]:
    """Global label ids in order of first appearance, and each block's local -> global map."""
    ids: dict[str, int] = {}
    maps = []
    for result in results:
        maps.append([ids.setdefault(name, len(ids)) for name in result.label_names])
    return list(ids), maps


def _too_few(n_records: int, n_distinct: int, min_rows: int) -> tuple[str, str]:
    need = f"at least {min_rows:,} distinct rows are needed"
    if n_distinct == n_records:
        return (f"only {n_distinct:,} row{_s(n_distinct)}; {need}", "add rows, or lower the minimum (min_rows)")
    if n_distinct == 1:
        return (f"all {n_records:,} rows are duplicates of 1 distinct record; {need}",
                "every row normalises to the same record (fields other than the task's are ignored, "
                "whitespace is stripped)")
    return (f"only {n_distinct:,} distinct records in {n_records:,} rows "
            f"({n_records - n_distinct:,} are duplicates); {need}",
            "duplicates are rows whose normalised records are equal; the first occurrence is kept")


def _row_warnings(results: Sequence[BlockScan], block_lines: Sequence[int], dups, task: str,
                  report: _Reporter) -> list[Diagnostic]:
    def first_line(attribute: str) -> int | None:
        for result, base in zip(results, block_lines, strict=True):
            line = getattr(result, attribute)
            if line is not None:
                return base + line
        return None

    warnings = []
    n_blank = sum(r.n_blank for r in results)
    if n_blank:
        first_blank = next(base + r.blank_lines[0] for r, base in zip(results, block_lines, strict=True)
                           if r.blank_lines)
        warnings.append(report.warning(f"skipped {n_blank:,} blank line{_s(n_blank)}",
                                       "blank lines hold no record", first_blank))
    known = ("input", second_field(task))
    fields: dict[str, int] = {}
    n_extra = 0
    for result in results:
        for names, count in result.field_sets.items():
            n_extra += count
            for name in names:
                if name not in known:
                    fields[name] = fields.get(name, 0) + count
    if n_extra:
        ranked = sorted(fields.items(), key=lambda item: (-item[1], item[0]))
        listed = ", ".join(f'"{name}" ({count:,})' for name, count in ranked[:5])
        if len(ranked) > 5:
            listed += f" and {len(ranked) - 5} more"
        warnings.append(report.warning(
            f"ignored fields other than \"input\" and \"{second_field(task)}\" in {n_extra:,} row{_s(n_extra)}",
            f"fields ignored: {listed}", first_line("first_extra")))
    n_int = sum(r.n_int_labels for r in results)
    if n_int:
        warnings.append(report.warning(
            f"converted {n_int:,} integer label{_s(n_int)} to strings",
            'a label 3 becomes "3"; write labels as strings to silence this', first_line("first_int_label")))
    if dups.count:
        duplicate, original = (_line_of(g, results, block_lines) for g in dups.example)
        warnings.append(report.warning(
            f"removed {dups.count:,} duplicate row{_s(dups.count)} (the first occurrence of each record is kept)",
            f"e.g. row {duplicate} repeats row {original} after normalisation", duplicate))
    return warnings


def _split_warnings(label_names: list[str], stratum_sizes: list[int], sizes: list[tuple[int, int, int]],
                    fractions, report: _Reporter) -> list[Diagnostic]:
    active = [name for name, f in zip(SPLITS, fractions, strict=True) if f > 0]
    short = []
    for i, size in enumerate(sizes):
        missing = [name for k, name in enumerate(SPLITS) if fractions[k] > 0 and size[k] == 0]
        if missing and stratum_sizes[i]:
            short.append((label_names[i] if label_names else None, stratum_sizes[i], missing))
    short.sort(key=lambda item: (item[0] or ""))
    warnings = []
    for name, count, missing in short[:_MAX_SPLIT_WARNINGS]:
        what = f'label "{name}" has' if name is not None else "the dataset has"
        warnings.append(report.warning(
            f"{what} only {count} distinct record{_s(count)}, too few for {len(active)} splits: "
            f"none in {' or '.join(missing)}",
            "add records with this label, or accept that it is not evaluated there"
            if name is not None else "add records"))
    if len(short) > _MAX_SPLIT_WARNINGS:
        more = len(short) - _MAX_SPLIT_WARNINGS
        warnings.append(report.warning(f"… and {more} more label{_s(more)} missing from some split"))
    return warnings


def _line_of(g: int, results: Sequence[BlockScan], block_lines: Sequence[int]) -> int:
    for result, base in zip(results, block_lines, strict=True):
        if g < result.n_valid:
            for j, line in enumerate(_row_lines(result.n_lines, result.blank_lines)):
                if j == g:
                    return base + line
        g -= result.n_valid
    raise IndexError(g)


def _row_lines(n_lines: int, blank_lines: Sequence[int]):
    """The lines (1-based, within a block) holding rows, in a block without bad rows."""
    blank = set(blank_lines)
    return (line for line in range(1, n_lines + 1) if line not in blank)


def _s(n: int) -> str:
    return "" if n == 1 else "s"

