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

Codes in an assignment: 0 duplicate (dropped), 1 train, 2 validation, 3 test.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import compress
from math import floor, sqrt

from fastuner.data.rows import PARTITIONS, BlockScan

DROPPED, TRAIN, VALIDATION, TEST = 0, 1, 2, 3


class InternalError(RuntimeError):
    """A broken invariant of the dataset code: a bug, never a user error."""


@dataclass
class Duplicates:
    keep: bytearray  # one byte per valid row: 1 first occurrence, 0 duplicate
    count: int
    example: tuple[int, int] | None  # (global ordinal of a duplicate, of the record it repeats)
    by_label: dict[int, int]  # global label id -> duplicates dropped


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


def mark_duplicates(blocks: Sequence[BlockScan], label_maps: Sequence[list[int]] | None) -> Duplicates:
    """Keep the first occurrence (in file order) of every digest.

    A partition's digests appear in file order (blocks in order, rows in order within a block), so
    one partition at a time suffices; built-in containers do the per-row work.
    """
    bases = _bases(blocks)
    keep = bytearray(b"\x01") * bases[-1]
    count = 0
    example: tuple[int, int] | None = None
    by_label: dict[int, int] = {}
    for p in range(PARTITIONS):
        digests, ordinals = _partition(blocks, bases, p)
        first = dict(zip(reversed(digests), reversed(ordinals), strict=True))  # digest -> first ordinal
        if len(first) == len(digests):
            continue
        dropped = sorted(set(ordinals).difference(first.values()))
        count += len(dropped)
        for g in dropped:
            keep[g] = 0
        if example is None or dropped[0] < example[0]:
            g = dropped[0]
            example = (g, first[digests[ordinals.index(g)]])
        if label_maps is not None:
            for g in dropped:
                b = bisect_right(bases, g) - 1
                label = label_maps[b][blocks[b].labels[g - bases[b]]]
                by_label[label] = by_label.get(label, 0) + 1
    return Duplicates(keep, count, example, by_label)


def choose_splits(blocks: Sequence[BlockScan], keep: bytearray, label_maps: Sequence[list[int]] | None,
                  sizes: Sequence[tuple[int, int, int]]) -> bytearray:
    """The split code of every valid row, given each stratum's (train, validation, test) sizes.

    Each stratum needs its `validation + test` smallest (key, ordinal) pairs among kept rows. Keys are
    uniform, so those lie below a threshold just above the expected quantile: only rows under it are
    collected and sorted. A stratum whose candidates fall short (a 1-in-10^15 event) is collected
    again without a threshold, so the result never depends on the threshold.
    """
    wanted = [s[1] + s[2] for s in sizes]
    thresholds = [_threshold(cap, sum(size)) for cap, size in zip(wanted, sizes, strict=True)]
    codes = bytearray(keep)  # 1 (train) for every kept row, 0 for duplicates
    short = _pick(blocks, keep, label_maps, sizes, thresholds, codes)
    if short:
        thresholds = [_ALL if s in short else 0 for s in range(len(sizes))]
        short = _pick(blocks, keep, label_maps, sizes, thresholds, codes)
        if short:
            raise InternalError(f"strata {sorted(short)} have fewer kept rows than planned")
    return codes


def check_disjoint(blocks: Sequence[BlockScan], codes: bytearray, expected: Sequence[int]) -> None:
    """Raise InternalError unless every kept record is unique and the split sizes are as planned.

    This re-derives from the digests what deduplication and splitting promised: a record (digest)
    kept more than once would sit in two splits, or twice in one.
    """
    counts = [codes.count(code) for code in (TRAIN, VALIDATION, TEST)]
    if counts != list(expected):
        raise InternalError(f"split sizes {counts} differ from the planned {list(expected)}")
    bases = _bases(blocks)
    for p in range(PARTITIONS):
        digests, ordinals = _partition(blocks, bases, p)
        kept = list(compress(digests, map(codes.__getitem__, ordinals)))
        if len(set(kept)) != len(kept):
            raise InternalError("a record is kept more than once (it would be in two splits, or twice in one)")


_ALL = 1 << 64


def _pick(blocks, keep, label_maps, sizes, thresholds, codes) -> set[int]:
    """Assign validation and test rows from the candidates under `thresholds`; the strata short of
    candidates (left untouched)."""
    candidates: list[int] = []
    for b, (block, base) in enumerate(zip(blocks, _bases(blocks), strict=False)):
        ordinals = range(base, base + block.n_valid)
        if label_maps is None:
            limit = thresholds[0]
            if limit:
                candidates += [(k << 32) | g for k, g in zip(block.keys, ordinals, strict=True) if k < limit]
            continue
        strata = map(label_maps[b].__getitem__, block.labels)
        candidates += [(s << 96) | (k << 32) | g
                       for k, s, g in zip(block.keys, strata, ordinals, strict=True) if k < thresholds[s]]
    candidates.sort()
    taken = [0] * len(sizes)
    for item in candidates:
        g = item & 0xFFFFFFFF
        if not keep[g]:
            continue
        s = item >> 96
        rank = taken[s]
        if rank < sizes[s][1]:
            codes[g] = VALIDATION
        elif rank < sizes[s][1] + sizes[s][2]:
            codes[g] = TEST
        else:
            continue
        taken[s] = rank + 1
    short = {s for s, size in enumerate(sizes) if thresholds[s] and taken[s] < size[1] + size[2]}
    for s in short:  # undo, to be redone without a threshold
        for item in candidates:
            if item >> 96 == s:
                g = item & 0xFFFFFFFF
                codes[g] = keep[g]
    return short


def _threshold(wanted: int, count: int) -> int:
    """A key limit under which at least `wanted` of `count` uniform keys lie, but for ~1e-15."""
    if wanted == 0:
        return 0
    p = (wanted + 8 * sqrt(wanted) + 16) / count
    return _ALL if p >= 1 else int(p * _ALL)


def _partition(blocks: Sequence[BlockScan], bases: Sequence[int], p: int) -> tuple[list[bytes], list[int]]:
    """Partition `p`'s digests and their global ordinals, in file order."""
    digests: list[bytes] = []
    ordinals: list[int] = []
    for block, base in zip(blocks, bases, strict=False):
        blob = block.part_digests[p]
        digests += [blob[at:at + 16] for at in range(0, len(blob), 16)]
        ordinals += map(base.__add__, block.part_ordinals[p])
    return digests, ordinals


def _bases(blocks: Sequence[BlockScan]) -> list[int]:
    """Global ordinal of each block's first valid row, then the total."""
    bases = [0]
    for block in blocks:
        bases.append(bases[-1] + block.n_valid)
    return bases
