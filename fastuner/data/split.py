"""Deduplicate the scanned rows and assign each distinct record to train, validation or test.

Split rule (stratified by label for classification; one stratum otherwise):
- a stratum of `c` distinct records gets `(n_train, n_validation, n_test)` from `allocate`: the
  largest-remainder rounding of `c * fraction` with exact fractions, then at least one record in every
  split whose fraction is positive when `c` allows it; a smaller stratum fills train, then validation,
  then test, one record each, and the scan warns;
- within a stratum, records are ordered by their seeded split key (the first 8 bytes of the row digest,
  read big-endian; ties broken by file position): the first `n_validation` go to validation, the next
  `n_test` to test, the rest to train. A record's split depends only on its content, the seed and the
  sizes of the strata.

How: rows are grouped by digest partition (equal records share a partition). One task per partition,
run in the worker pool, finds the duplicates (`dedupe_partition`) and the rows whose key is small
enough to be among their stratum's validation and test picks (`find_duplicates`). The main process
sorts those candidates (about a fifth of the rows), assigns them (`choose_splits`) and checks that no
record is in two splits (`check_disjoint`).

Codes in an assignment: 0 duplicate (dropped), 1 train, 2 validation, 3 test.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial
from math import floor, sqrt

from fastuner.data.rows import PARTITIONS, BlockScan

DROPPED, TRAIN, VALIDATION, TEST = 0, 1, 2, 3
RECORD = 24  # bytes kept per row: 8 of split key, 16 of identity
_ORDINAL_BITS = 32
_KEY_SHIFT = _ORDINAL_BITS
STRATUM_SHIFT = 64 + _ORDINAL_BITS
_ALL = b"\xff" * (RECORD + 1)  # a threshold above every record
_NONE = b""  # a threshold below every record


class InternalError(RuntimeError):
    """A broken invariant of the dataset code: a bug, never a user error."""


@dataclass
class PartitionResult:
    dropped: list[int] = field(default_factory=list)  # ordinals of duplicates, ascending
    example: tuple[int, int] | None = None  # (first duplicate, the ordinal it repeats)
    dropped_by_stratum: dict[int, int] = field(default_factory=dict)
    candidates: list[int] = field(default_factory=list)  # encoded (stratum, key, ordinal)


# One block's share of a partition: (base ordinal, label map or None, records, ordinals, labels).
PartitionSlice = tuple[int, list[int] | None, bytes, Sequence[int], Sequence[int]]


@dataclass
class Strata:
    """The strata of a scan: one per label for classification (in order of first appearance), else one."""

    names: list[str]  # label of each stratum; empty when not stratified
    label_maps: list[list[int]] | None  # per block: its local label id -> stratum
    rows: list[int]  # valid rows per stratum, duplicates included


@dataclass
class Deduplication:
    keep: bytearray  # one byte per valid row: 1 for a first occurrence, 0 for a duplicate
    count: int
    example: tuple[int, int] | None  # (a duplicate's ordinal, the ordinal of the row it repeats)
    distinct: list[int]  # distinct records per stratum
    candidates: list[int]  # encoded (stratum, key, ordinal) of rows that may go to validation or test


def strata_of(blocks: Sequence[BlockScan], stratified: bool) -> Strata:
    if not stratified:
        return Strata([], None, [sum(b.n_valid for b in blocks)])
    ids: dict[str, int] = {}
    maps = [[ids.setdefault(name, len(ids)) for name in block.label_names] for block in blocks]
    rows = [0] * len(ids)
    for block, label_map in zip(blocks, maps, strict=True):
        for local, count in enumerate(block.label_counts):
            rows[label_map[local]] += count
    return Strata(list(ids), maps, rows)


def find_duplicates(blocks: Sequence[BlockScan], strata: Strata, fractions: Sequence[Fraction],
                    pool: Executor) -> Deduplication:
    """Run `dedupe_partition` on every partition in `pool` and merge the results.

    The candidate thresholds come from the counts before deduplication, so that one pass over the
    partitions both deduplicates and collects candidates; `choose_splits` collects a stratum that
    is left short again, in full.
    """
    thresholds = thresholds_for([sum(allocate(c, fractions)[1:]) for c in strata.rows], strata.rows)
    jobs = [pool.submit(dedupe_partition, partition_slices(blocks, strata.label_maps, p), thresholds)
            for p in range(PARTITIONS)]
    keep = bytearray(b"\x01") * sum(b.n_valid for b in blocks)
    distinct = list(strata.rows)
    count = 0
    example = None
    candidates: list[int] = []
    for job in jobs:
        part = job.result()
        count += len(part.dropped)
        for g in part.dropped:
            keep[g] = 0
        for s, n in part.dropped_by_stratum.items():
            distinct[s] -= n
        if part.example and (example is None or part.example < example):
            example = part.example
        candidates += part.candidates
    return Deduplication(keep, count, example, distinct, candidates)


def choose_splits(blocks: Sequence[BlockScan], strata: Strata, dedup: Deduplication,
                  sizes: Sequence[tuple[int, int, int]], pool: Executor) -> bytearray:
    """The split code of every valid row, checked by `check_disjoint`."""
    keep = dedup.keep
    codes = bytearray(keep)  # 1 (train) for every kept row, 0 for duplicates
    candidates = dedup.candidates
    short = assign_candidates(candidates, keep, sizes, codes)
    if short:
        candidates = [c for c in candidates if c >> STRATUM_SHIFT not in short]
        everything = every_row_of(short, len(sizes))
        jobs = [pool.submit(dedupe_partition, partition_slices(blocks, strata.label_maps, p), everything, False)
                for p in range(PARTITIONS)]
        more = [c for job in jobs for c in job.result().candidates]
        only_short = [size if s in short else (0, 0, 0) for s, size in enumerate(sizes)]
        if assign_candidates(more, keep, only_short, codes):
            raise InternalError(f"strata {sorted(short)} have fewer rows than planned")
        candidates = sorted(candidates + more)
    totals = [sum(size[i] for size in sizes) for i in range(3)]
    check_disjoint(candidates, codes, totals, partial(record_of, blocks))
    return codes


def allocate(count: int, fractions: Sequence[Fraction]) -> tuple[int, int, int]:
    """How many of `count` records go to (train, validation, test)."""
    ideal = [count * f for f in fractions]
    sizes = [floor(x) for x in ideal]
    left = count - sum(sizes)
    by_remainder = sorted(range(3), key=lambda i: (-(ideal[i] - sizes[i]), i))
    for i in by_remainder[:left]:
        sizes[i] += 1
    active = [i for i in range(3) if fractions[i] > 0]
    if count < len(active):
        sizes = [0, 0, 0]
        for i in active[:count]:
            sizes[i] = 1
    else:
        for i in active:
            if sizes[i] == 0:
                donor = max(active, key=lambda j: (sizes[j], -j))
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes[0], sizes[1], sizes[2]


def partition_slices(blocks: Sequence[BlockScan], label_maps: Sequence[list[int]] | None,
                     p: int) -> list[PartitionSlice]:
    """Partition `p`'s rows of every block, in file order, as `dedupe_partition` takes them."""
    bases = block_bases(blocks)
    return [(bases[b], label_maps[b] if label_maps is not None else None, block.part_digests[p],
             block.part_ordinals[p], block.part_labels[p]) for b, block in enumerate(blocks)]


def dedupe_partition(slices: Sequence[PartitionSlice], thresholds: Sequence[bytes],
                     dedupe: bool = True) -> PartitionResult:
    """Duplicates in one partition (the first occurrence in file order is kept), and the candidates:
    every row (duplicates included) whose record sorts below its stratum's threshold.

    Runs in a worker. Built-in containers do the per-row work: no Python loop runs per row except to
    build the candidates, about a fifth of the rows.
    """
    records: list[bytes] = []
    ordinals: list[int] = []
    strata: list[int] = []
    for base, label_map, blob, block_ordinals, labels in slices:
        records += [blob[at:at + RECORD] for at in range(0, len(blob), RECORD)]
        ordinals += map(base.__add__, block_ordinals)
        strata += map(label_map.__getitem__, labels) if label_map is not None else [0] * len(block_ordinals)
    out = PartitionResult()
    if dedupe:
        first = dict(zip(reversed(records), reversed(ordinals), strict=True))  # record -> first ordinal
        if len(first) != len(records):
            out.dropped = sorted(set(ordinals).difference(first.values()))
            g = out.dropped[0]
            out.example = (g, first[records[bisect_left(ordinals, g)]])
            for g in out.dropped:  # ordinals ascend: blocks in order, rows in order within a block
                s = strata[bisect_left(ordinals, g)]
                out.dropped_by_stratum[s] = out.dropped_by_stratum.get(s, 0) + 1
    out.candidates = [
        (s << STRATUM_SHIFT) | (int.from_bytes(record[:8], "big") << _KEY_SHIFT) | g
        for record, s, g in zip(records, strata, ordinals, strict=True) if record < thresholds[s]
    ]
    return out


def thresholds_for(wanted: Sequence[int], counts: Sequence[int]) -> list[bytes]:
    """Per stratum, a record bound under which at least `wanted` of `counts` rows lie, but for
    ~1e-15 (keys are uniform): about `wanted` plus eight standard deviations."""
    out = []
    for k, c in zip(wanted, counts, strict=True):
        if k == 0:
            out.append(_NONE)
            continue
        p = (k + 8 * sqrt(k) + 16) / max(c, 1)
        out.append(_ALL if p >= 1 else int(p * 2**64).to_bytes(8, "big"))
    return out


def every_row_of(strata: set[int], count: int) -> list[bytes]:
    """Thresholds that make every row of `strata`, and no other, a candidate."""
    return [_ALL if s in strata else _NONE for s in range(count)]


def assign_candidates(candidates: list[int], keep: bytearray, sizes: Sequence[tuple[int, int, int]],
                      codes: bytearray) -> set[int]:
    """Give validation, then test, to each stratum's smallest kept candidates (sorted in place);
    return the strata that had too few candidates (left untouched)."""
    candidates.sort()
    taken = [0] * len(sizes)
    mask = (1 << _ORDINAL_BITS) - 1
    for item in candidates:
        g = item & mask
        if not keep[g]:
            continue
        s = item >> STRATUM_SHIFT
        rank = taken[s]
        if rank < sizes[s][1]:
            codes[g] = VALIDATION
        elif rank < sizes[s][1] + sizes[s][2]:
            codes[g] = TEST
        else:
            continue
        taken[s] = rank + 1
    short = {s for s, size in enumerate(sizes) if taken[s] < size[1] + size[2]}
    if short:
        for item in candidates:
            if item >> STRATUM_SHIFT in short:
                g = item & mask
                codes[g] = keep[g]
    return short


def check_disjoint(candidates: Sequence[int], codes: bytearray, expected: Sequence[int],
                   record_of: Callable[[int], bytes]) -> None:
    """Raise InternalError unless the split sizes are as planned and no record is in two splits.

    A record in two splits means two kept rows with the same digest, one of them in validation or
    test. Both then have the same stratum and key, so both are candidates, adjacent in the sorted
    candidates: the check looks at every adjacent pair with equal stratum and key that the codes
    both keep, and compares their records (two records sharing a 64-bit key is possible, if unlikely).
    It reads only the final codes, so it holds deduplication and assignment to account.
    """
    counts = [codes.count(code) for code in (TRAIN, VALIDATION, TEST)]
    if counts != list(expected):
        raise InternalError(f"split sizes {counts} differ from the planned {list(expected)}")
    mask = (1 << _ORDINAL_BITS) - 1
    previous = None
    for item in candidates:
        if codes[item & mask]:
            if previous is not None and previous >> _KEY_SHIFT == item >> _KEY_SHIFT:
                first, second = previous & mask, item & mask
                if record_of(first) == record_of(second):
                    raise InternalError(f"rows {first} and {second} hold the same record and are both kept "
                                        "(it would be in two splits)")
            previous = item


def record_of(blocks: Sequence[BlockScan], g: int) -> bytes:
    """The 24-byte digest prefix of row `g` (a slow lookup, for the rare rows that need it)."""
    bases = block_bases(blocks)
    b = bisect_right(bases, g) - 1
    block, ordinal = blocks[b], g - bases[b]
    for p in range(PARTITIONS):
        try:
            at = block.part_ordinals[p].index(ordinal)
        except ValueError:
            continue
        return block.part_digests[p][RECORD * at:RECORD * (at + 1)]
    raise InternalError(f"no digest for row {g}")


def block_bases(blocks: Sequence[BlockScan]) -> list[int]:
    """Global ordinal of each block's first valid row, then the total."""
    bases = [0]
    for block in blocks:
        bases.append(bases[-1] + block.n_valid)
    return bases
