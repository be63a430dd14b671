"""Deduplicate the scanned rows and assign each distinct record to train, validation or test.

Split rule (stratified by label for classification; one stratum otherwise):
- a stratum of `c` distinct records gets `(n_train, n_validation, n_test)` from `allocate`: the
  largest-remainder rounding of `c * fraction` with exact fractions, then at least one record in every
  split whose fraction is positive when `c` allows it; a smaller stratum fills train, then validation,
  then test, one record each, and the scan warns;
- within a stratum, records are ordered by their seeded split key (the first 8 bytes of the row digest,
  ties broken by file position): the first `n_validation` go to validation, the next `n_test` to test,
  the rest to train. A record's split depends only on its content, the seed and the stratum's size.

Codes in an assignment: 0 duplicate (dropped), 1 train, 2 validation, 3 test.
"""

from __future__ import annotations

import heapq
import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from math import floor

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

    Digests are grouped by partition in the blocks, and a partition's digests appear in file order
    (blocks in order, rows in order within a block), so one small dict per partition suffices.
    """
    bases = _bases(blocks)
    keep = bytearray(b"\x01") * (bases[-1] if bases else 0)
    count = 0
    example: tuple[int, int] | None = None
    by_label: dict[int, int] = {}
    for p in range(PARTITIONS):
        seen: dict[bytes, int] = {}
        first_of = seen.setdefault
        for b, block in enumerate(blocks):
            base = bases[b]
            blob = block.part_digests[p]
            for at, j in zip(range(0, len(blob), 16), block.part_ordinals[p], strict=True):
                g = base + j
                first = first_of(blob[at:at + 16], g)
                if first != g:
                    keep[g] = 0
                    count += 1
                    if example is None or g < example[0]:
                        example = (g, first)
                    if label_maps is not None:
                        label = label_maps[b][block.labels[j]]
                        by_label[label] = by_label.get(label, 0) + 1
    return Duplicates(keep, count, example, by_label)


def choose_splits(blocks: Sequence[BlockScan], keep: bytearray, label_maps: Sequence[list[int]] | None,
                  sizes: Sequence[tuple[int, int, int]]) -> bytearray:
    """The split code of every valid row, given each stratum's (train, validation, test) sizes."""
    caps = [s[1] + s[2] for s in sizes]
    heaps: list[list[tuple[int, int]]] = [[] for _ in sizes]
    push, replace = heapq.heappush, heapq.heapreplace
    for b, (block, base) in enumerate(zip(blocks, _bases(blocks), strict=False)):
        keys = split_keys(block)
        labels = block.labels
        label_map = label_maps[b] if label_maps is not None else None
        for j, key in enumerate(keys):
            g = base + j
            if not keep[g]:
                continue
            stratum = label_map[labels[j]] if label_map is not None else 0
            cap = caps[stratum]
            if not cap:
                continue
            heap = heaps[stratum]
            # A max-heap of the `cap` smallest (key, ordinal) pairs, stored negated.
            if len(heap) < cap:
                push(heap, (-key, -g))
            elif -key >= heap[0][0]:
                item = (-key, -g)
                if item > heap[0]:
                    replace(heap, item)
    codes = bytearray(keep)  # 1 (train) for every kept row, 0 for duplicates
    for stratum, heap in enumerate(heaps):
        n_validation = sizes[stratum][1]
        for rank, (_key, g) in enumerate(sorted((-k, -g) for k, g in heap)):
            codes[g] = VALIDATION if rank < n_validation else TEST
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
        kept = [
            block.part_digests[p][at:at + 16]
            for block, base in zip(blocks, bases, strict=False)
            for at, j in zip(range(0, len(block.part_digests[p]), 16), block.part_ordinals[p], strict=True)
            if codes[base + j]
        ]
        if len(set(kept)) != len(kept):
            raise InternalError("a record is kept more than once (it would be in two splits, or twice in one)")


def split_keys(block: BlockScan) -> array:
    """The block's split keys as unsigned integers (stored big-endian, so byte order is key order)."""
    keys = array("Q")
    keys.frombytes(block.keys)
    if sys.byteorder == "little":
        keys.byteswap()
    return keys


def _bases(blocks: Sequence[BlockScan]) -> list[int]:
    """Global ordinal of each block's first valid row, then the total."""
    bases = [0]
    for block in blocks:
        bases.append(bases[-1] + block.n_valid)
    return bases
