"""Deduplication, normalisation and splitting: exact sizes, seeded, stratified, disjoint, reproducible."""

from __future__ import annotations

from fractions import Fraction
from functools import partial

import pytest
from pydantic import ValidationError

from fastuner.config.models import DatasetChecks, Split
from fastuner.config.tasks import Task
from fastuner.data import InternalError, scan_dataset
from fastuner.data.blocks import FileHash, InlineExecutor, map_blocks, read_blocks, split_lines
from fastuner.data.rows import PARTITIONS, scan_block
from fastuner.data.rules import split_fractions
from fastuner.data.scan import limits_for
from fastuner.data.split import (
    allocate,
    check_disjoint,
    dedupe_partition,
    every_row_of,
    partition_slices,
    record_of,
)
from fastuner.errors import DiagnosticsError
from tests.data.helpers import classification_rows, generation_rows


def splits_of(scan) -> dict[str, list[int]]:
    return {name: scan.rows_in(name) for name in ("train", "validation", "test")}


# --- deduplication and normalisation ---------------------------------------------------------------

def test_records_equal_after_normalisation_are_duplicates_and_the_first_wins(write_rows):
    rows = classification_rows(120)
    rows += [
        {"input": "  message number 3\t", "label": "account"},  # whitespace around: row 3 again
        {"input": "message number 5", "label": " refund ", "id": 99},  # extra field ignored, label stripped
        {"label": "billing", "input": "message number 8"},  # key order does not matter
        {"input": "message number 9", "label": "billing"},  # a different label: not a duplicate
        {"input": "cafe\u0301", "label": "billing"},  # decomposed é ...
        {"input": "caf\u00e9", "label": "billing"},  # ... and composed: NFC makes them equal
    ]
    scan = scan_dataset(write_rows(rows), "classification")
    assert scan.rows_in("duplicate") == [121, 122, 123, 126]
    assert (scan.counts.records, scan.counts.duplicates, scan.counts.distinct) == (126, 4, 122)
    (warning,) = [w for w in scan.warnings if "duplicate" in w.summary]
    assert warning.summary == "removed 4 duplicate rows (the first occurrence of each record is kept)"
    assert warning.detail == "e.g. row 121 repeats row 4 after normalisation"
    assert warning.source.line == 121


def test_normalised_record_is_what_the_split_files_hold(write_rows, tmp_path):
    from fastuner.data import LocalObjectStore, write_splits

    rows = [*generation_rows(100), {"input": " cafe\u0301 \n", "target": "\tr\u00e9ponse ", "id": 1}]
    scan = scan_dataset(write_rows(rows), "text_generation", split=Split(train=1.0, validation=0.0, test=0.0))
    store = LocalObjectStore(tmp_path / "store")
    out = write_splits(scan, store)
    lines = store.get(out["splits"]["train"]["key"]).decode().splitlines()
    assert lines[-1] == '{"input":"caf\u00e9","target":"r\u00e9ponse"}'


# --- allocation --------------------------------------------------------------------------------------

F = split_fractions(Split())


@pytest.mark.parametrize(("count", "expected"), [
    (100, (80, 10, 10)), (101, (81, 10, 10)), (109, (87, 11, 11)), (10, (8, 1, 1)), (3, (1, 1, 1)),
    (4, (2, 1, 1)), (2, (1, 1, 0)), (1, (1, 0, 0)), (0, (0, 0, 0)),
])
def test_allocate_default_fractions(count, expected):
    assert allocate(count, F) == expected
    assert sum(expected) == count


def test_allocate_respects_zero_fractions():
    assert allocate(50, (Fraction(1), Fraction(0), Fraction(0))) == (50, 0, 0)
    assert allocate(3, (Fraction(9, 10), Fraction(0), Fraction(1, 10))) == (2, 0, 1)
    assert allocate(1000, (Fraction(7, 10), Fraction(2, 10), Fraction(1, 10))) == (700, 200, 100)


def test_split_fractions_must_add_up_to_one():
    """The scan reads the spec's own `Split`, so what it refuses is refused when the spec is loaded."""
    with pytest.raises(ValidationError, match=r"must sum to 1 \(got 1.1\)"):
        Split(train=0.8, validation=0.1, test=0.2)
    with pytest.raises(ValidationError, match=r"train\n  Input should be greater than 0"):
        Split(train=0.0, validation=0.5, test=0.5)
    with pytest.raises(ValidationError, match="less than or equal to 1"):
        Split(train=1.2, validation=-0.1, test=-0.1)
    with pytest.raises(ValidationError, match=r"seed\n  Input should be greater than or equal to 0"):
        Split(seed=-1)
    assert split_fractions(Split(train=0.7, validation=0.2, test=0.1)) == (Fraction(7, 10), Fraction(2, 10),
                                                                          Fraction(1, 10))
    assert split_fractions(Split(train=1, validation=0, test=0)) == (1, 0, 0)


def test_rules_are_checked():
    with pytest.raises(ValidationError, match=r"min_rows\n  Input should be greater than or equal to 1"):
        DatasetChecks(min_rows=0)


# --- splitting ---------------------------------------------------------------------------------------

def test_default_split_is_80_10_10_and_every_row_lands_once(write_rows):
    scan = scan_dataset(write_rows(generation_rows(1000)), "text_generation")
    splits = splits_of(scan)
    assert scan.split_rows == {"train": 800, "validation": 100, "test": 100}
    assert {k: len(v) for k, v in splits.items()} == scan.split_rows
    every = splits["train"] + splits["validation"] + splits["test"]
    assert sorted(every) == list(range(1, 1001))


def test_zero_fraction_gives_an_empty_split(write_rows):
    scan = scan_dataset(write_rows(generation_rows(200)), "qa", split=Split(train=0.9, validation=0.0, test=0.1))
    assert scan.split_rows == {"train": 180, "validation": 0, "test": 20}
    assert not [w for w in scan.warnings if "too few" in w.summary]


def test_same_seed_same_splits_different_seed_different_splits(write_rows):
    path = write_rows(classification_rows(500))
    a = scan_dataset(path, "classification", split=Split(seed=1))
    b = scan_dataset(path, "classification", split=Split(seed=1))
    c = scan_dataset(path, "classification", split=Split(seed=2))
    assert splits_of(a) == splits_of(b) and a.version == b.version
    assert splits_of(a)["test"] != splits_of(c)["test"]
    assert a.split_rows == c.split_rows  # same sizes, different records
    assert a.version != c.version


def test_a_records_split_depends_on_its_content_not_its_position(write_rows):
    rows = generation_rows(300)
    forward = scan_dataset(write_rows(rows, "a.jsonl"), "qa")
    backward = scan_dataset(write_rows(rows[::-1], "b.jsonl"), "qa")
    for name in ("train", "validation", "test"):
        assert sorted(301 - line for line in backward.rows_in(name)) == forward.rows_in(name)


def test_classification_is_stratified_with_every_label_in_every_split(write_rows):
    labels = [("common", 700), ("medium", 200), ("rare", 30), ("tiny", 3)]
    rows = [{"input": f"{label} {i}", "label": label} for label, n in labels for i in range(n)]
    scan = scan_dataset(write_rows(rows), "classification")
    assert scan.labels == {"common": 700, "medium": 200, "rare": 30, "tiny": 3}
    assert scan.split_labels == {
        "train": {"common": 560, "medium": 160, "rare": 24, "tiny": 1},
        "validation": {"common": 70, "medium": 20, "rare": 3, "tiny": 1},
        "test": {"common": 70, "medium": 20, "rare": 3, "tiny": 1},
    }
    assert not [w for w in scan.warnings if "too few" in w.summary]


def test_labels_too_rare_for_every_split_are_warned_about_by_name(write_rows):
    rows = classification_rows(200, labels=("a", "b"))
    rows += [{"input": "only one", "label": "solo"}, {"input": "one", "label": "pair"},
             {"input": "two", "label": "pair"}]
    scan = scan_dataset(write_rows(rows), "classification")
    assert scan.split_labels["train"]["solo"] == 1 and "solo" not in scan.split_labels["validation"]
    assert scan.split_labels["train"]["pair"] == 1 and scan.split_labels["validation"]["pair"] == 1
    warnings = {w.summary for w in scan.warnings}
    assert 'label "pair" has only 2 distinct records, too few for 3 splits: none in test' in warnings
    assert 'label "solo" has only 1 distinct record, too few for 3 splits: none in validation or test' in warnings


def test_no_record_is_in_two_splits(write_rows):
    rows = classification_rows(400) + classification_rows(400)[::3]  # with duplicates
    scan = scan_dataset(write_rows(rows), "classification")
    splits = splits_of(scan)
    seen: dict[str, str] = {}
    lines = [to_record(r) for r in rows]
    for name, rows_in_split in splits.items():
        for line in rows_in_split:
            record = lines[line - 1]
            assert record not in seen, f"{record} in {seen.get(record)} and {name}"
            seen[record] = name
    assert len(seen) == scan.counts.distinct == 400


def to_record(row: dict) -> str:
    return f"{row['input']}\x00{row['label']}"


def _candidates_of(path):
    """Scan one block by hand and return (candidates of every row, record lookup)."""
    data = path.read_bytes()
    block = scan_block((b"", data, len(data)), limits_for(Task.CLASSIFICATION, DatasetChecks()), 42, True)
    maps = [list(range(len(block.label_names)))]
    everything = every_row_of(set(maps[0]), len(maps[0]))
    candidates = sorted(c for p in range(PARTITIONS)
                        for c in dedupe_partition(partition_slices([block], maps, p), everything).candidates)
    return candidates, partial(record_of, [block])


def test_the_disjointness_check_catches_a_record_kept_twice(write_rows):
    """The internal check is not decorative: fed an assignment that keeps a duplicate, it raises."""
    rows = [*classification_rows(10), classification_rows(10)[3]]  # row 11 repeats row 4
    candidates, lookup = _candidates_of(write_rows(rows))
    good = bytearray([1] * 10 + [0])
    check_disjoint(candidates, good, [10, 0, 0], lookup)
    with pytest.raises(InternalError, match="rows 3 and 10 hold the same record"):
        check_disjoint(candidates, bytearray([1] * 10 + [2]), [10, 1, 0], lookup)
    with pytest.raises(InternalError, match="split sizes"):
        check_disjoint(candidates, good, [8, 1, 1], lookup)


def test_the_disjointness_check_tells_a_shared_key_from_a_shared_record():
    """Two different records may share a 64-bit split key; only equal records are a bug."""
    key = 7 << 32
    candidates = [key | 0, key | 1, (9 << 32) | 2]
    records = {0: b"K" * 8 + b"A" * 16, 1: b"K" * 8 + b"B" * 16, 2: b"L" * 8 + b"C" * 16}
    check_disjoint(candidates, bytearray([1, 2, 1]), [2, 1, 0], records.__getitem__)
    records[1] = records[0]
    with pytest.raises(InternalError, match="two splits"):
        check_disjoint(candidates, bytearray([1, 2, 1]), [2, 1, 0], records.__getitem__)


def test_a_stratum_short_of_candidates_is_collected_again(write_rows, monkeypatch):
    """Thresholds only speed things up: with thresholds that catch nothing, the result is the same."""
    import fastuner.data.split as split_module

    path = write_rows(classification_rows(600))
    expected = splits_of(scan_dataset(path, "classification"))
    monkeypatch.setattr(split_module, "thresholds_for", lambda wanted, counts: [b"\x00"] * len(counts))
    assert splits_of(scan_dataset(path, "classification")) == expected


# --- parallelism and determinism -------------------------------------------------------------------

def test_parallel_and_single_worker_scans_are_identical(write_rows):
    rows = classification_rows(3000)
    rows += classification_rows(3000)[::7]
    rows.insert(1234, "")
    path = write_rows(rows)
    single = scan_dataset(path, "classification", workers=1)
    small_blocks = scan_dataset(path, "classification", workers=1, block_bytes=4096)
    parallel = scan_dataset(path, "classification", workers=2, block_bytes=4096)
    assert len(parallel.layout.block_sizes) > 10
    for other in (small_blocks, parallel):
        assert other == single  # every public field, warnings included
        assert splits_of(other) == splits_of(single)
        assert other.rows_in("duplicate") == single.rows_in("duplicate")


def test_parallel_errors_are_the_same_as_single_worker_errors(write_rows):
    rows = classification_rows(2000)
    for i in range(3, 2000, 37):
        rows[i] = '{"input": 1}'
    path = write_rows(rows)
    with pytest.raises(DiagnosticsError) as single:
        scan_dataset(path, "classification", workers=1)
    with pytest.raises(DiagnosticsError) as parallel:
        scan_dataset(path, "classification", workers=2, block_bytes=2048)
    assert parallel.value.diagnostics == single.value.diagnostics
    assert single.value.diagnostics[-1].summary == "… and 34 more bad rows (54 in all)"


def test_blocks_always_end_at_line_ends_and_cover_the_file(write_rows):
    rows = [*classification_rows(500), {"input": "x" * 9000, "label": "long"}, *classification_rows(50)]
    path = write_rows(rows)
    data = path.read_bytes()
    digest = FileHash()
    with open(path, "rb") as f:
        blocks = list(read_blocks(f, 1000, digest))
    texts = [b.head + b.body[:b.end] for b in blocks]
    assert b"".join(texts) == data
    assert all(text.endswith(b"\n") for text in texts)
    assert [b.size for b in blocks] == [len(t) for t in texts]
    assert [b.offset for b in blocks] == [sum(b.size for b in blocks[:i]) for i in range(len(blocks))]
    assert digest.size == len(data)
    assert [line for b in blocks for line in split_lines(b.parts())] == data.split(b"\n")[:-1]
    results = [r for _, r in map_blocks(iter(blocks), split_lines, lambda b: (), InlineExecutor(), 1)]
    assert [len(r) for r in results] == [t.count(b"\n") for t in texts]


def test_a_file_without_a_final_newline_keeps_its_last_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"a\nbb\n" + b"c" * 2500)
    with open(path, "rb") as f:
        blocks = list(read_blocks(f, 1000, FileHash()))
    assert [line for b in blocks for line in split_lines(b.parts())] == [b"a", b"bb", b"c" * 2500]


def test_version_changes_with_everything_that_changes_the_split_files(write_rows):
    path = write_rows(classification_rows(300))
    base = scan_dataset(path, "classification")
    assert base.version == scan_dataset(path, "classification", workers=2, block_bytes=1024).version
    others = [
        scan_dataset(path, "classification", split=Split(train=0.8, validation=0.15, test=0.05)),
        scan_dataset(path, "classification", split=Split(seed=43)),
        scan_dataset(path, "classification", rules=DatasetChecks(max_input_chars=100)),
        scan_dataset(write_rows(classification_rows(301), "b.jsonl"), "classification"),
    ]
    versions = {base.version} | {o.version for o in others}
    assert len(versions) == 5


