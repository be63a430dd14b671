"""The fast path of deduplication and splitting: array (numpy) versions of `split.py`'s per-row work.

Each function here returns exactly what its reference in `split.py` returns for the same input, and
`scan_dataset(fast=False)` runs the references instead (tests compare the two on generated data).
Without numpy the references run.

The rows themselves are parsed, normalised and hashed by the reference code (`rows.py`) for both
paths: that loop was measured against every alternative tried — the same steps as `map`s over runs
of rows, pyarrow (`read_json`, `utf8_normalize`, `binary_join_element_wise`) and polars
(`read_ndjson`, `concat_str`) — and none cost less per row, because what a row costs is mostly
orjson, the UTF-8 copies and OpenSSL's per-call overhead in `hashlib`, which they all still pay.
"""

from __future__ import annotations

try:
    import numpy as np
except ImportError:  # pragma: no cover - numpy is a dependency; this keeps a broken install working
    np = None


def available() -> bool:
    return np is not None


def dedupe_partition_fast(slices, thresholds: list[bytes], dedupe: bool = True):
    """`split.dedupe_partition(slices, thresholds, dedupe)`, with array operations.

    The same result: records are compared whole (24 bytes), the first occurrence in file order is
    kept, and a row is a candidate when its record sorts below its stratum's threshold as bytes.
    A threshold of 0 to 8 bytes compares with the record's first bytes as a big-endian number
    (equal first bytes make the longer record the greater); the 25-byte all-0xff threshold is above
    every record. Any other threshold makes this function run the reference one.
    """
    from fastuner.data.split import _KEY_SHIFT, STRATUM_SHIFT, PartitionResult, dedupe_partition

    shifts, limits, modes = [], [], []  # mode 0: never, 1: compare, 2: always
    for threshold in thresholds:
        if len(threshold) <= 8:
            shifts.append(8 * (8 - len(threshold)) if threshold else 0)
            limits.append(int.from_bytes(threshold, "big"))
            modes.append(1 if threshold else 0)
        elif threshold == b"\xff" * 25:
            shifts.append(0)
            limits.append(0)
            modes.append(2)
        else:
            return dedupe_partition(slices, thresholds, dedupe)
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
    out = PartitionResult()
    if not blobs:
        return out
    words = np.frombuffer(b"".join(blobs), ">u8").reshape(-1, 3)  # a record: 3 big-endian words
    g = np.concatenate(ordinals)  # ascending: blocks in file order, rows in order within a block
    s = np.concatenate(strata)
    n = len(g)
    key = words[:, 0]
    if dedupe and n > 1:
        # Equal records have equal keys: only rows whose key repeats (duplicates, and the rare
        # different records sharing a key) need comparing, in Python, whole and in file order.
        order = np.argsort(key, kind="stable")
        ranked = key[order]
        tied = np.flatnonzero(ranked[1:] == ranked[:-1])
        if len(tied):
            rows = np.unique(np.concatenate((order[tied], order[tied + 1])))  # ascending: file order
            first: dict[bytes, int] = {}
            dropped = []
            example = None
            for i, record in zip(rows.tolist(), map(bytes, words[rows]), strict=True):
                original = first.setdefault(record, i)
                if original != i:
                    dropped.append(i)
                    if example is None:
                        example = original
            if dropped:
                out.dropped = g[dropped].tolist()
                out.example = (out.dropped[0], int(g[example]))
                for stratum in s[dropped].tolist():
                    out.dropped_by_stratum[stratum] = out.dropped_by_stratum.get(stratum, 0) + 1
    mode = np.asarray(modes, np.int8)[s]
    below = key >> np.asarray(shifts, np.uint64)[s] < np.asarray(limits, np.uint64)[s]
    chosen = np.flatnonzero((mode == 2) | ((mode == 1) & below))
    shift = STRATUM_SHIFT
    out.candidates = [(stratum << shift) | (k << _KEY_SHIFT) | ordinal for stratum, k, ordinal in
                      zip(s[chosen].tolist(), key[chosen].tolist(), g[chosen].tolist(), strict=True)]
    return out
