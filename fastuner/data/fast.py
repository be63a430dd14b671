"""The fast path of a scan: numpy versions of the per-row bookkeeping in `rows.py` and `split.py`.

Each function here returns exactly what its reference returns for the same input (`rows.scan_block`,
`split.dedupe_partition`, `split.find_duplicates`, `split.choose_splits`), and
`scan_dataset(fast=False)` runs the references instead; tests compare the two on generated files.
Without numpy the references run.

Each row is still parsed, normalised and hashed exactly as `rows.py` does it, one row at a time:
that loop was measured against every alternative tried — the same steps as `map`s over runs of rows,
pyarrow (`read_json` alone costs 6 CPU-s per GB, `utf8_normalize` 6, `binary_join_element_wise` 6.5),
polars (`read_ndjson` + `concat_str` + `to_list` ~6.6 before hashing), building the record from the
line's own bytes — and none cost less per row, because what a row costs is mostly orjson, UTF-8
copies and OpenSSL's per-call overhead in `hashlib` (~1 us a row), which they all still pay.
"""

from __future__ import annotations

import unicodedata
from array import array
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from fractions import Fraction
from functools import partial

import orjson

from fastuner.data import split
from fastuner.data.blocks import split_lines
from fastuner.data.rows import _BOM, BlockScan, Limits, RowError, _check_row, row_hasher, scan_block
from fastuner.data.split import (
    _ALL,
    _KEY_SHIFT,
    PARTITIONS,
    RECORD,
    STRATUM_SHIFT,
    TEST,
    TRAIN,
    VALIDATION,
    Deduplication,
    InternalError,
    PartitionResult,
    PartitionSlice,
    Strata,
    allocate,
    dedupe_partition,
    every_row_of,
    partition_slices,
    record_of,
)

_loads, _dumps, _nfc = orjson.loads, orjson.dumps, unicodedata.normalize

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dependency; this keeps a broken install working
    np = None


def available() -> bool:
    return np is not None


def scan_block_either(block: tuple[bytes, bytes, int], limits: Limits, seed: int, first_block: bool) -> BlockScan:
    """`scan_block_fast`, or the reference `rows.scan_block` for a block it does not handle."""
    result = scan_block_fast(block, limits, seed, first_block)
    return scan_block(block, limits, seed, first_block) if result is None else result


def scan_block_fast(block: tuple[bytes, bytes, int], limits: Limits, seed: int,
                    first_block: bool) -> BlockScan | None:
    """`rows.scan_block(block, limits, seed, first_block)` for a block without bad rows, or None.

    The same loop over the lines as `rows._walk` (the same parsing, normalisation, record and digest
    for every row; blank lines, integer labels and extra fields handled alike, through the same
    `rows._check_row`), but the per-row bookkeeping is left out of the loop: the digests and labels
    are collected in order and sorted into partitions and label ids afterwards with numpy (about 7%
    less CPU per row). A bad row returns None: the reference then scans the block and reports it.
    """
    lines = split_lines(block)
    if first_block and lines and lines[0].startswith(_BOM):
        lines[0] = lines[0][len(_BOM):]
    labelled = limits.labelled
    second = limits.second
    max_input = limits.max_input_chars
    max_second = limits.max_second_chars or 0
    loads, dumps, nfc = _loads, _dumps, _nfc
    copy = row_hasher(seed).copy
    out = BlockScan(n_lines=len(lines))
    digests: list[bytes] = []
    add_digest = digests.append
    labels: list[str] = []
    add_label = labels.append
    field_sets = out.field_sets
    first_extra = None
    for index, line in enumerate(lines):
        try:
            obj = loads(line)
            text = obj["input"]
            other = obj[second]
            if type(text) is not str or type(other) is not str:
                raise ValueError
            if not text.isascii():
                text = nfc("NFC", text)
            text = text.strip()
            if not other.isascii():
                other = nfc("NFC", other)
            other = other.strip()
            if not 0 < len(text) <= max_input or not other or (max_second and len(other) > max_second):
                raise ValueError
            record = dumps({"input": text, second: other})
        except Exception:
            verdict = _check_row(line, limits)
            if verdict is None:
                out.n_blank += 1
                out.blank_lines.append(index + 1)
                continue
            if isinstance(verdict, RowError):
                return None
            obj, record, other, from_int = verdict
            if from_int:
                out.n_int_labels += 1
                if out.first_int_label is None:
                    out.first_int_label = index + 1
        if len(obj) != 2:
            names = tuple(obj)
            field_sets[names] = field_sets.get(names, 0) + 1
            if first_extra is None:
                first_extra = index + 1
        h = copy()
        h.update(record)
        add_digest(h.digest())
        if labelled:
            add_label(other)
    out.first_extra = first_extra
    n = out.n_valid = len(digests)

    table = np.frombuffer(b"".join(digests), np.uint8).reshape(n, 32)
    part = table[:, 8] >> 3  # as rows.py: PARTITIONS = 32
    order = np.argsort(part, kind="stable")  # by partition, in file order within one
    bounds = np.searchsorted(part[order], np.arange(PARTITIONS + 1)).tolist()
    records = np.ascontiguousarray(table[order, :RECORD])
    ordinals = order.astype(np.uint32)
    if labelled:
        names = dict.fromkeys(labels)  # in order of first appearance, as rows.py numbers them
        ids = {name: i for i, name in enumerate(names)}
        label_ids = np.fromiter(map(ids.__getitem__, labels), np.uint32, n)
        out.label_names = list(names)
        out.label_counts = np.bincount(label_ids, minlength=len(ids)).tolist()
        label_ids = label_ids[order]
    for p in range(PARTITIONS):
        a, b = bounds[p], bounds[p + 1]
        out.part_digests.append(records[a:b].tobytes())
        out.part_ordinals.append(array("I", ordinals[a:b].tobytes()))
        out.part_labels.append(array("I", label_ids[a:b].tobytes()) if labelled else array("I"))
    return out


def dedupe_partition_fast(slices: Sequence[PartitionSlice], thresholds: Sequence[bytes],
                          dedupe: bool = True) -> PartitionResult:
    """`split.dedupe_partition(slices, thresholds, dedupe)`, computed by `partition_arrays` (or by
    the reference itself, for thresholds that `partition_arrays` does not take)."""
    arrays = partition_arrays(slices, thresholds, dedupe)
    if arrays is None:
        return dedupe_partition(slices, thresholds, dedupe)
    dropped, example, dropped_by_stratum, candidates = arrays
    out = PartitionResult(dropped.tolist(), example, dropped_by_stratum)
    out.candidates = [(s << STRATUM_SHIFT) | (k << _KEY_SHIFT) | g for s, k, g in candidates.tolist()]
    return out


def partition_arrays(slices: Sequence[PartitionSlice], thresholds: Sequence[bytes], dedupe: bool = True):
    """What `split.dedupe_partition` finds in one partition, as arrays: (the dropped rows' ordinals,
    ascending; the example; dropped rows by stratum; the candidates, rows of [stratum, split key,
    ordinal] in file order). None for a threshold it does not take.

    Records are compared whole (24 bytes) and the first occurrence in file order is kept: rows are
    sorted by split key and only rows whose key repeats (duplicates, and the rare different records
    that share a key) are compared, in Python. A row is a candidate when its record sorts below its
    stratum's threshold as bytes: a threshold of 0 to 8 bytes compares with the record's first bytes
    as a big-endian number (equal first bytes make the longer record the greater), and the 25-byte
    all-0xff threshold is above every record.
    """
    shifts, limits, modes = [], [], []  # mode 0: never, 1: compare, 2: always
    for threshold in thresholds:
        if len(threshold) <= 8:
            shifts.append(8 * (8 - len(threshold)) if threshold else 0)
            limits.append(int.from_bytes(threshold, "big"))
            modes.append(1 if threshold else 0)
        elif threshold == _ALL:
            shifts.append(0)
            limits.append(0)
            modes.append(2)
        else:
            return None
    blobs, ordinals, strata = [], [], []
    for base, label_map, blob, block_ordinals, labels in slices:
        if not len(block_ordinals):
            continue
        blobs.append(blob)
        ordinals.append(np.asarray(block_ordinals, np.int64) + base)
        if label_map is None:
            strata.append(np.zeros(len(block_ordinals), np.int64))
        else:
            strata.append(np.asarray(label_map, np.int64)[np.asarray(labels, np.int64)])
    if not blobs:
        return np.zeros(0, np.int64), None, {}, np.zeros((0, 3), np.uint64)
    words = np.frombuffer(b"".join(blobs), ">u8").reshape(-1, 3)  # a record: 3 big-endian words
    g = np.concatenate(ordinals)  # ascending: blocks in file order, rows in order within a block
    s = np.concatenate(strata)
    key = words[:, 0]
    dropped: list[int] = []
    example = None
    by_stratum: dict[int, int] = {}
    if dedupe and len(g) > 1:
        order = np.argsort(key, kind="stable")
        ranked = key[order]
        tied = np.flatnonzero(ranked[1:] == ranked[:-1])
        if len(tied):
            rows = np.unique(np.concatenate((order[tied], order[tied + 1])))  # ascending: file order
            first: dict[bytes, int] = {}
            for i, record in zip(rows.tolist(), map(bytes, words[rows]), strict=True):
                original = first.setdefault(record, i)
                if original != i:
                    dropped.append(i)
                    if example is None:
                        example = (int(g[i]), int(g[original]))
            for stratum in s[dropped].tolist():  # in the order the reference meets them
                by_stratum[stratum] = by_stratum.get(stratum, 0) + 1
    mode = np.asarray(modes, np.int8)[s]
    below = key >> np.asarray(shifts, np.uint64)[s] < np.asarray(limits, np.uint64)[s]
    chosen = np.flatnonzero((mode == 2) | ((mode == 1) & below))
    candidates = np.stack((s[chosen].astype(np.uint64), key[chosen], g[chosen].astype(np.uint64)), axis=1)
    return g[dropped], example, by_stratum, candidates


def find_duplicates(blocks: Sequence[BlockScan], strata: Strata, fractions: Sequence[Fraction],
                    pool: Executor) -> Deduplication:
    """`split.find_duplicates`, with `partition_arrays`; `keep` is a numpy array of 0/1 bytes and the
    candidates an array of [stratum, key, ordinal] rows (what `choose_splits` here takes)."""
    wanted = [sum(allocate(c, fractions)[1:]) for c in strata.rows]
    thresholds = split.thresholds_for(wanted, strata.rows)  # looked up when called: tests replace it
    _check_thresholds(thresholds)
    jobs = [pool.submit(partition_arrays, partition_slices(blocks, strata.label_maps, p), thresholds)
            for p in range(PARTITIONS)]
    keep = np.ones(sum(b.n_valid for b in blocks), np.uint8)
    distinct = list(strata.rows)
    count = 0
    example = None
    candidates = []
    for job in jobs:
        dropped, part_example, by_stratum, part_candidates = job.result()
        count += len(dropped)
        keep[dropped] = 0
        for s, n in by_stratum.items():
            distinct[s] -= n
        if part_example and (example is None or part_example < example):
            example = part_example
        candidates.append(part_candidates)
    return Deduplication(keep, count, example, distinct, np.concatenate(candidates))


def choose_splits(blocks: Sequence[BlockScan], strata: Strata, dedup: Deduplication,
                  sizes: Sequence[tuple[int, int, int]], pool: Executor) -> bytearray:
    """`split.choose_splits` for what `find_duplicates` here returns: the same codes, the same checks."""
    keep = dedup.keep
    codes = keep.copy()
    candidates, short = _assign(dedup.candidates, keep, sizes, codes)
    if short:
        candidates = candidates[~np.isin(candidates[:, 0], sorted(short))]
        everything = every_row_of(short, len(sizes))
        jobs = [pool.submit(partition_arrays, partition_slices(blocks, strata.label_maps, p), everything, False)
                for p in range(PARTITIONS)]
        more = np.concatenate([job.result()[3] for job in jobs])
        only_short = [size if s in short else (0, 0, 0) for s, size in enumerate(sizes)]
        more, still_short = _assign(more, keep, only_short, codes)
        if still_short:
            raise InternalError(f"strata {sorted(short)} have fewer rows than planned")
        candidates = _sorted(np.concatenate((candidates, more)))
    totals = [sum(size[i] for size in sizes) for i in range(3)]
    _check_disjoint(candidates, codes, totals, partial(record_of, blocks))
    return bytearray(codes)


def _sorted(candidates):
    return candidates[np.lexsort((candidates[:, 2], candidates[:, 1], candidates[:, 0]))]


def _assign(candidates, keep, sizes: Sequence[tuple[int, int, int]], codes) -> tuple:
    """`split.assign_candidates`: (the candidates sorted, the strata short of candidates)."""
    candidates = _sorted(candidates)
    s = candidates[:, 0].astype(np.int64)
    g = candidates[:, 2].astype(np.int64)
    kept = keep[g] == 1
    s_kept, g_kept = s[kept], g[kept]
    n_validation = np.asarray([size[1] for size in sizes], np.int64)
    n_picked = n_validation + np.asarray([size[2] for size in sizes], np.int64)
    rank = np.arange(len(s_kept)) - np.searchsorted(s_kept, np.arange(len(sizes)))[s_kept]  # within the stratum
    codes[g_kept[rank < n_validation[s_kept]]] = VALIDATION
    codes[g_kept[(rank >= n_validation[s_kept]) & (rank < n_picked[s_kept])]] = TEST
    short = set(np.flatnonzero(np.bincount(s_kept, minlength=len(sizes)) < n_picked).tolist())
    if short:
        mine = np.isin(s, sorted(short))
        codes[g[mine]] = keep[g[mine]]
    return candidates, short


def _check_disjoint(candidates, codes, expected: Sequence[int], record_of: Callable[[int], bytes]) -> None:
    """`split.check_disjoint` for sorted candidate rows and a numpy `codes`."""
    counts = [int(np.count_nonzero(codes == code)) for code in (TRAIN, VALIDATION, TEST)]
    if counts != list(expected):
        raise InternalError(f"split sizes {counts} differ from the planned {list(expected)}")
    kept = candidates[codes[candidates[:, 2].astype(np.int64)] != 0]
    same = np.flatnonzero((kept[1:, 0] == kept[:-1, 0]) & (kept[1:, 1] == kept[:-1, 1]))
    for first, second in zip(kept[same, 2].tolist(), kept[same + 1, 2].tolist(), strict=True):
        if record_of(first) == record_of(second):
            raise InternalError(f"rows {first} and {second} hold the same record and are both kept "
                                "(it would be in two splits)")


def _check_thresholds(thresholds: Sequence[bytes]) -> None:
    if any(len(t) > 8 and t != _ALL for t in thresholds):
        raise InternalError("split.thresholds_for made a threshold that fast.partition_arrays does not take")
