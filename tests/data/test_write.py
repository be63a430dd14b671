"""write_splits: the split files and manifest in the store, byte-reproducible, all or nothing."""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata

import pytest

from fastuner.config.models import Split
from fastuner.data import LocalObjectStore, scan_dataset, write_splits
from fastuner.data.rules import split_fractions
from fastuner.data.split import allocate
from fastuner.errors import DiagnosticsError
from tests.data.helpers import classification_rows, generation_rows


def objects(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def golden_rows() -> list[dict]:
    rows = []
    for i in range(300):
        text = f"Row {i}: caf\u00e9 \u201cquoted\u201d \u65e5\u672c\u8a9e {'x' * (i % 17)}"
        rows.append({"input": text, "label": ("pos", "neg", "neu")[i * 7 % 3], "id": i})
    rows[10]["input"] = "  " + rows[10]["input"].replace("\u00e9", "e\u0301") + "  "
    return rows + rows[:25]


def test_split_files_and_manifest(write_rows, tmp_path):
    scan = scan_dataset(write_rows(classification_rows(200)), "classification")
    store = LocalObjectStore(tmp_path / "store")
    out = write_splits(scan, store)
    assert out["version"] == scan.version and out["source_sha256"] == scan.source_sha256
    assert out["counts"] == {"lines": 200, "blank": 0, "records": 200, "duplicates": 0, "distinct": 200}
    assert out["labels"] == {"account": 50, "billing": 50, "refund": 50, "shipping": 50}
    records = set()
    for name, rows in (("train", 160), ("validation", 20), ("test", 20)):
        split = out["splits"][name]
        data = store.get(split["key"])
        assert split["rows"] == rows and split["bytes"] == len(data)
        assert split["key"].endswith(split["sha256"])
        assert data.endswith(b"\n") and data.count(b"\n") == rows
        for line in data.decode("utf-8").split("\n")[:-1]:
            assert line == line.strip()
            record = json.loads(line)
            assert list(record) == ["input", "label"]
            records.add(line)
        assert split["labels"] == {label: rows // 4 for label in ("account", "billing", "refund", "shipping")}
    assert len(records) == 200  # no record in two splits
    manifest = json.loads(store.get(out["manifest_key"]))
    assert manifest["version"] == scan.version and manifest["format_version"] == 1
    assert manifest["splits"] == out["splits"]
    assert manifest["split_spec"] == {"train": 0.8, "validation": 0.1, "test": 0.1, "seed": 42}


def test_writing_the_same_dataset_again_rewrites_nothing(write_rows, tmp_path):
    scan = scan_dataset(write_rows(generation_rows(150)), "qa")
    store = LocalObjectStore(tmp_path / "store")
    first = write_splits(scan, store)
    stats = {key: os.stat(store.path(key)) for key in [first["manifest_key"]] +
             [s["key"] for s in first["splits"].values()]}
    again = write_splits(scan_dataset(scan.path, "qa", workers=2, block_bytes=512), store, workers=2)
    assert again == first
    for key, before in stats.items():
        after = os.stat(store.path(key))
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(objects(store.root / "sha256")) == 4


def test_split_files_are_byte_identical_across_runs_and_pinned(write_rows, tmp_path):
    """The same file and seed give the same bytes on every machine and Python version: these hashes
    are pinned. A deliberate change to normalisation or splitting must bump NORMALISATION_VERSION."""
    path = write_rows(golden_rows())
    scan = scan_dataset(path, "classification", split=Split(train=0.8, validation=0.1, test=0.1, seed=7))
    out = write_splits(scan, LocalObjectStore(tmp_path / "a"))
    again = write_splits(scan_dataset(path, "classification", split=Split(seed=7), workers=2,
                                      block_bytes=1024), LocalObjectStore(tmp_path / "b"), workers=2)
    assert again == out
    assert scan.counts.distinct == 300 and scan.counts.duplicates == 25
    assert {name: s["sha256"] for name, s in out["splits"].items()} == GOLDEN_SPLITS
    assert out["version"] == GOLDEN_VERSION


GOLDEN_SPLITS = {
    "train": "da6b7b8e9411d9424962910721ee5f7867ecdd5812a38d333b0c55d8912bc589",
    "validation": "fcca9e4222c19817cf58c55d332933ac9bcdc2350b4fff7c4c0501b068a4b2eb",
    "test": "607a31567b2cdbcff51483f66734c73bd3c1596039e42bb9c29a7e22bcbc7a07",
}
GOLDEN_VERSION = "32747bfa62a16351cdd29e71294db87eec2d8c592c5861869d18f5eafbe3dd3c"


def reference_splits(rows: list[dict], seed: int, fractions) -> dict[str, bytes]:
    """The documented rule, written plainly: normalise (NFC, strip), first occurrence wins, order each
    label's records by the first 8 bytes (big-endian) of SHA-256(seed prefix + record), take
    validation then test from the front, keep file order in each file."""
    records: list[tuple[bytes, str]] = []
    seen = set()
    for row in rows:
        text = unicodedata.normalize("NFC", row["input"]).strip()
        label = unicodedata.normalize("NFC", str(row["label"])).strip()
        record = json.dumps({"input": text, "label": label}, ensure_ascii=False,
                            separators=(",", ":")).encode()
        if record not in seen:
            seen.add(record)
            records.append((record, label))
    by_label: dict[str, list] = {}
    for position, (record, label) in enumerate(records):
        digest = hashlib.sha256(b"fastuner-row-v1\x00seed=%d\x00" % seed + record).digest()
        by_label.setdefault(label, []).append((int.from_bytes(digest[:8], "big"), position))
    chosen: dict[int, str] = {}
    for items in by_label.values():
        items.sort()
        _, n_validation, n_test = allocate(len(items), fractions)
        for rank, (_, position) in enumerate(items):
            chosen[position] = ("validation" if rank < n_validation else
                                "test" if rank < n_validation + n_test else "train")
    return {name: b"".join(records[p][0] + b"\n" for p in sorted(chosen) if chosen[p] == name)
            for name in ("train", "validation", "test")}


def test_split_files_follow_the_documented_rule(write_rows, tmp_path):
    rows = golden_rows()
    spec = Split(train=0.7, validation=0.2, test=0.1, seed=11)
    store = LocalObjectStore(tmp_path / "s")
    out = write_splits(scan_dataset(write_rows(rows), "classification", split=spec), store)
    expected = reference_splits(rows, 11, split_fractions(spec))
    for name in ("train", "validation", "test"):
        assert store.get(out["splits"][name]["key"]) == expected[name], name


def test_empty_split_is_stored_as_an_empty_object(write_rows, tmp_path):
    scan = scan_dataset(write_rows(generation_rows(100)), "qa", split=Split(train=0.9, validation=0.0, test=0.1))
    out = write_splits(scan, LocalObjectStore(tmp_path / "s"))
    assert out["splits"]["validation"]["rows"] == 0 and out["splits"]["validation"]["bytes"] == 0
    assert "labels" not in out["splits"]["validation"]


def test_nothing_is_stored_when_a_row_fails(write_rows, tmp_path):
    rows = classification_rows(500)
    rows[321] = '{"input": "x"'
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(DiagnosticsError):
        write_splits(scan_dataset(write_rows(rows), "classification"), store)
    assert not store.root.exists()


def test_a_file_changed_after_the_scan_is_refused_and_nothing_is_stored(write_rows, tmp_path):
    rows = classification_rows(300)
    path = write_rows(rows)
    scan = scan_dataset(path, "classification")
    rows[5]["input"] = "edited since"
    write_rows(rows)
    store = LocalObjectStore(tmp_path / "store")
    with pytest.raises(DiagnosticsError, match="changed since it was validated"):
        write_splits(scan, store)
    assert objects(store.root) == []
    path.unlink()
    with pytest.raises(DiagnosticsError, match="changed since it was validated"):
        write_splits(scan, store)
