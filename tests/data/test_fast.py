"""The fast path gives exactly what the reference path gives: seeded random files of nasty rows.

The fast path is what `scan_dataset(fast=True)` (the default) runs with workers: blocks read by the
workers from the file (checked against the CRC of what the main process hashed) and deduplication
and candidate selection with numpy (`fast.py`). The reference is `fast=False` with one worker: the
blocks' bytes handed over in-process and `split.py`'s dict-based deduplication.
"""

from __future__ import annotations

import json
import os
import random
from concurrent.futures import Executor, Future

import pytest

from fastuner.config.models import DatasetChecks, Split
from fastuner.config.tasks import Task
from fastuner.data import LocalObjectStore, scan_dataset, write_splits
from fastuner.data.blocks import FileChanged, FileHash, map_blocks, read_block, read_blocks, split_lines
from fastuner.data.split import PARTITIONS, RECORD, dedupe_partition, every_row_of
from fastuner.errors import DiagnosticsError

np = pytest.importorskip("numpy")  # without numpy the fast path is the reference: nothing to compare
from fastuner.data.fast import dedupe_partition_fast, scan_block_fast  # noqa: E402
from fastuner.data.rows import scan_block  # noqa: E402
from fastuner.data.scan import limits_for  # noqa: E402

SPLITS = ("train", "validation", "test", "duplicate")
WHITESPACE = [" ", "\t", "\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\xa0", "\u1680",
              "\u2000", "\u2009", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"]
PIECES = ["a", "Zz", "caf\u00e9", "cafe\u0301", "\u212b", "A\u030a", "\u00c5", "\u1e9b\u0323", "\ufb01",
          "\u65e5\u672c", "\U0001f642", '"', "\\", "/", "\x00", "\x07", "\x1b", "\x7f", "\u0300", "\ud7ff",
          "</script>", "\u00e9\u0301", "e\u0301\u0301", "\u0915\u094d\u0937", "x" * 40, "\ufffd", "1"]


def nasty_text(rng: random.Random) -> str:
    parts = [rng.choice(PIECES) for _ in range(rng.randint(1, 4))]
    if rng.random() < 0.4:
        parts.insert(0, "".join(rng.choices(WHITESPACE, k=rng.randint(1, 3))))
    if rng.random() < 0.4:
        parts.append("".join(rng.choices(WHITESPACE, k=rng.randint(1, 3))))
    text = "".join(parts)
    return text if text.strip() else text + "q"


def encode(obj: dict, rng: random.Random) -> bytes:
    """JSON for `obj` in one of several spellings (spacing, escaping, key order)."""
    items = list(obj.items())
    if rng.random() < 0.3:
        rng.shuffle(items)
    style = rng.randrange(4)
    if style == 0:
        return json.dumps(dict(items), ensure_ascii=False, separators=(",", ":")).encode()
    if style == 1:
        return json.dumps(dict(items)).encode()  # \\uXXXX escapes, ", " and ": "
    if style == 2:
        return json.dumps(dict(items), ensure_ascii=False, indent=None, separators=(" , ", " : ")).encode()
    body = ",".join(f"{json.dumps(k)}:{json.dumps(v, ensure_ascii=rng.random() < 0.5)}" for k, v in items)
    return ("{ " + body + " }").encode()


def nasty_file(rng: random.Random, task: str, n: int) -> bytes:
    second = "label" if task == "classification" else "target"
    labels = [nasty_text(rng) for _ in range(5)] + [" spam ", "spam", "sp\u00e4m", "spa\u0308m"]
    seen: list[dict] = []
    lines = []
    for i in range(n):
        r = rng.random()
        if r < 0.04:
            lines.append(rng.choice([b"", b" ", b"\t", b"\r", b"  \t ", b"\x0b", b"\x0c"]))
            continue
        if seen and r < 0.15:  # a repeat: the same record, or one that normalises to it
            row = dict(rng.choice(seen))
            if rng.random() < 0.5:
                row["input"] = rng.choice([" ", "\t", "\u3000", "\n"]) + row["input"] + rng.choice(["", " ", "\u2028"])
        else:
            row = {"input": nasty_text(rng) + f" {i}", second: rng.choice(labels) if task == "classification"
                   else nasty_text(rng)}
            if task == "classification" and rng.random() < 0.1:
                row[second] = rng.choice([0, 1, 7, -3, 12345678901234567890])
            seen.append(row)
        row = dict(row)
        if rng.random() < 0.3:
            row[rng.choice(["id", "source", "meta", "input_ids"])] = rng.choice(
                [i, None, "x", [1, {"a": None}], {"n": 1.5e300}, True, ""])
        line = encode(row, rng)
        if rng.random() < 0.05:  # a duplicate key: orjson keeps the last value
            line = line[:-1] + b', "input": ' + json.dumps(nasty_text(rng) + f" dup{i}").encode() + b"}"
        lines.append(line)
    newline = b"\r\n" if rng.random() < 0.3 else b"\n"
    data = newline.join(lines) + (newline if rng.random() < 0.8 else b"")
    return (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + data


def both(path, task, **kwargs):
    """(reference scan, fast scan), or (reference error, fast error)."""
    results = []
    for fast, workers, block_bytes in ((False, 1, 1 << 22), (True, kwargs.pop("workers", 1), kwargs.pop("block_bytes", 2048))):
        try:
            results.append(scan_dataset(path, task, fast=fast, workers=workers, block_bytes=block_bytes, **kwargs))
        except DiagnosticsError as exc:
            results.append(exc)
    return results


def assert_same_scan(reference, fast):
    assert type(reference) is type(fast)
    if isinstance(reference, DiagnosticsError):
        assert fast.diagnostics == reference.diagnostics
        assert [str(d) for d in fast.diagnostics] == [str(d) for d in reference.diagnostics]
        return
    assert fast == reference  # every public field: counts, splits, labels, warnings, version
    assert fast.warnings == reference.warnings
    for name in SPLITS:
        assert fast.rows_in(name) == reference.rows_in(name), name


@pytest.mark.parametrize("seed", range(24))
def test_nasty_files_scan_the_same(tmp_path, seed):
    rng = random.Random(seed)
    task = ("classification", "text_generation", "qa")[seed % 3]
    path = tmp_path / "nasty.jsonl"
    path.write_bytes(nasty_file(rng, task, rng.randint(150, 900)))
    fractions = rng.choice([(0.8, 0.1, 0.1), (0.5, 0.3, 0.2), (0.9, 0.0, 0.1), (1.0, 0.0, 0.0)])
    split = Split(**dict(zip(("train", "validation", "test"), fractions, strict=True)), seed=rng.randrange(100))
    rules = DatasetChecks(min_rows=rng.choice([1, 50, 100]), max_input_chars=rng.choice([60, 8192]))
    reference, fast = both(path, task, split=split, rules=rules, block_bytes=rng.choice([512, 4096, 1 << 20]))
    assert_same_scan(reference, fast)
    if isinstance(reference, DiagnosticsError):
        return
    assert reference.counts.duplicates and reference.warnings  # the generator does make nasty files
    outs = [write_splits(scan, LocalObjectStore(tmp_path / f"store{i}"), workers=1)
            for i, scan in enumerate((reference, fast))]
    assert outs[0] == outs[1]


@pytest.mark.parametrize("seed", range(3))
def test_nasty_files_scan_and_write_the_same_with_worker_processes(tmp_path, seed):
    rng = random.Random(1000 + seed)
    task = ("classification", "text_generation")[seed % 2]
    path = tmp_path / "nasty.jsonl"
    path.write_bytes(nasty_file(rng, task, 3000))
    reference, fast = both(path, task, rules=DatasetChecks(min_rows=10), workers=2, block_bytes=4096)
    assert_same_scan(reference, fast)
    assert len(fast.layout.block_sizes) > 10
    stores = [LocalObjectStore(tmp_path / "a"), LocalObjectStore(tmp_path / "b")]
    outs = [write_splits(reference, stores[0], workers=1), write_splits(fast, stores[1], workers=2)]
    assert outs[0] == outs[1]
    for name in ("train", "validation", "test"):
        key = outs[0]["splits"][name]["key"]
        assert stores[0].get(key) == stores[1].get(key)


def bad_line(rng: random.Random, i: int) -> bytes:
    return rng.choice([
        b'{"input": "x", "label": "a",}', b"{", b'["input"]', b'"text"', b"null", b"12", b'{"input": 1, "label": "a"}',
        b'{"input": null, "label": "a"}', b'{"input": "a", "label": 1.5}', b'{"input": "a", "label": true}',
        b'{"input": "a", "target": "b"}', b'{"text": "a", "label": "b"}', b'{"input": "  ", "label": "a"}',
        b'{"input": "a", "label": ""}', b'{"input": "caf\xe9", "label": "a"}', b'{"input": "\\ud800", "label": "a"}',
        b'{"input": "a", "label": "b"} {"input": "c"}', b'{"input": "' + b"y" * 70 + b'", "label": "a"}',
        b'{"input": "a", "label": {"x": 1}}', b'{"input": "a", "label": [1]}', b"\xef\xbb\xbf{}",
        b'{"input": "a", "label": "b"}x', b'{"input": "\x01", "label": "a"}', b"{'input': 'a'}",
    ]) + (b" %d" % i if rng.random() < 0.1 else b"")


@pytest.mark.parametrize("seed", range(12))
def test_bad_files_give_the_same_diagnostics(tmp_path, seed):
    rng = random.Random(500 + seed)
    lines = nasty_file(rng, "classification", 400).split(b"\n")
    for _ in range(rng.choice([1, 3, 30])):
        at = rng.randrange(len(lines))
        lines[at] = bad_line(rng, at)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines))
    reference, fast = both(path, "classification", rules=DatasetChecks(max_input_chars=64),
                           block_bytes=rng.choice([256, 4096]))
    assert isinstance(reference, DiagnosticsError)
    assert_same_scan(reference, fast)


def test_bad_file_gives_the_same_diagnostics_with_worker_processes(tmp_path):
    rng = random.Random(77)
    lines = nasty_file(rng, "qa", 4000).split(b"\n")
    for at in rng.sample(range(len(lines)), 40):
        lines[at] = bad_line(rng, at).replace(b'"label"', b'"target"')
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b"\n".join(lines))
    reference, fast = both(path, "qa", workers=2, block_bytes=2048)
    assert isinstance(reference, DiagnosticsError) and len(reference.diagnostics) == 21
    assert_same_scan(reference, fast)


# --- deduplication: the numpy version against the reference ----------------------------------------

def random_slices(rng: random.Random, n_strata: int):
    """Partition slices as `split.partition_slices` makes them, with repeated records and records that
    share a split key but differ."""
    pool = [rng.randbytes(RECORD) for _ in range(40)]
    shared = rng.randbytes(8)
    pool += [shared + rng.randbytes(RECORD - 8) for _ in range(4)]
    pool += [bytes(RECORD), b"\xff" * RECORD, b"\x80" + bytes(RECORD - 1)]
    slices, base = [], 0
    for _ in range(rng.randint(0, 6)):
        count = rng.randint(0, 30)
        records = [rng.choice(pool) if rng.random() < 0.5 else rng.randbytes(RECORD) for _ in range(count)]
        ordinals = sorted(rng.sample(range(count + 20), count))
        from array import array

        labels = array("I", [rng.randrange(3) for _ in range(count)])
        label_map = [rng.randrange(n_strata) for _ in range(3)] if n_strata > 1 else None
        slices.append((base, label_map, b"".join(records), array("I", ordinals), labels))
        base += count + 20
    return slices


@pytest.mark.parametrize("seed", range(300))
def test_array_deduplication_is_the_reference(seed):
    rng = random.Random(seed)
    n_strata = rng.choice([1, 1, 3])
    slices = random_slices(rng, n_strata)
    choices = [b"", b"\x00", b"\x7f", b"\x80\x00", rng.randbytes(8), b"\xff" * 8, b"\xff" * (RECORD + 1),
               rng.randbytes(rng.randint(1, 7))]
    thresholds = [rng.choice(choices) for _ in range(n_strata)]
    if seed % 10 == 0:
        thresholds = every_row_of({0}, n_strata)
    for dedupe in (True, False):
        reference = dedupe_partition(slices, thresholds, dedupe)
        fast = dedupe_partition_fast(slices, thresholds, dedupe)
        assert fast == reference
        assert list(fast.dropped_by_stratum) == list(reference.dropped_by_stratum)


def test_array_deduplication_falls_back_for_other_thresholds():
    rng = random.Random(3)
    slices = random_slices(rng, 1)
    odd = [rng.randbytes(12)]
    assert dedupe_partition_fast(slices, odd) == dedupe_partition(slices, odd)


def test_partitions_are_what_the_fast_path_assumes():
    assert PARTITIONS == 32 and RECORD == 24


# --- blocks read by the workers ---------------------------------------------------------------------

class EditingExecutor(Executor):
    """Runs calls at once, like a worker would, but edits the file before the second one."""

    def __init__(self, path, data: bytes) -> None:
        self.path, self.data, self.calls = path, data, 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.calls += 1
        if self.calls == 2:
            self.path.write_bytes(self.data)
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def test_workers_read_their_blocks_and_see_a_changed_file(tmp_path):
    path = tmp_path / "x.jsonl"
    data = b"".join(b'{"input": "row %d", "label": "a"}\n' % i for i in range(200)) + b"tail"
    path.write_bytes(data)
    with open(path, "rb") as f:
        blocks = list(read_blocks(f, 1000, FileHash()))
    with open(path, "rb") as f:
        same = [r for _, r in map_blocks(read_blocks(f, 1000, FileHash()), split_lines, lambda b: (),
                                        EditingExecutor(tmp_path / "other", b""), 1, source=str(path))]
    assert same == [split_lines(b.parts()) for b in blocks]
    assert same[-1] == [b"tail"]
    edited = data.replace(b"row 40\"", b"row 41\"")  # in the second block, being submitted
    with open(path, "rb") as f, pytest.raises(FileChanged):
        list(map_blocks(read_blocks(f, 1000, FileHash()), split_lines, lambda b: (), EditingExecutor(path, edited),
                        1, source=str(path)))
    with pytest.raises(FileChanged):
        read_block(str(path), blocks[0].offset, blocks[0].size + 1, 0)
    with pytest.raises(FileChanged):
        read_block(str(tmp_path / "gone.jsonl"), 0, 10, 0)


def test_a_file_edited_during_the_scan_is_an_error(tmp_path, monkeypatch):
    import fastuner.data.scan as scan_module

    rows = [{"input": f"row {i}", "label": "ab"[i % 2]} for i in range(600)]
    path = tmp_path / "x.jsonl"
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(data)
    monkeypatch.setattr(scan_module, "worker_pool", lambda workers: EditingExecutor(path, data.replace(b"row 5", b"row 6")))
    with pytest.raises(DiagnosticsError) as caught:
        scan_dataset(path, "classification", workers=2, block_bytes=1024)
    (error,) = caught.value.diagnostics
    assert error.summary.startswith("dataset file changed while it was being read: ")


@pytest.mark.parametrize("seed", range(6))
def test_strata_short_of_candidates_are_collected_again_the_same_way(tmp_path, monkeypatch, seed):
    """Thresholds that catch too few rows send both paths through their second collection."""
    import fastuner.data.split as split_module

    rng = random.Random(900 + seed)
    path = tmp_path / "x.jsonl"
    path.write_bytes(nasty_file(rng, "classification", 600))
    choices = [b"", b"\x00", b"\x30", b"\x10\x00", rng.randbytes(8)]
    monkeypatch.setattr(split_module, "thresholds_for",
                        lambda wanted, counts: [rng.choice(choices) for _ in counts])
    reference, fast = both(path, "classification", rules=DatasetChecks(min_rows=10), split=Split(train=0.6, validation=0.2, test=0.2))
    assert_same_scan(reference, fast)
    assert reference.split_rows["validation"] > 0


def test_the_fast_disjointness_check_catches_a_record_kept_twice():
    from fastuner.data.fast import _check_disjoint
    from fastuner.data.split import InternalError

    candidates = np.array([[0, 7, 0], [0, 7, 1], [0, 9, 2]], np.uint64)
    records = {0: b"K" * 8 + b"A" * 16, 1: b"K" * 8 + b"B" * 16, 2: b"L" * 8 + b"C" * 16}
    codes = np.array([1, 2, 1], np.uint8)
    _check_disjoint(candidates, codes, [2, 1, 0], records.__getitem__)  # a shared key, different records
    records[1] = records[0]
    with pytest.raises(InternalError, match="rows 0 and 1 hold the same record"):
        _check_disjoint(candidates, codes, [2, 1, 0], records.__getitem__)
    codes[1] = 0  # the repeat dropped: fine
    _check_disjoint(candidates, codes, [2, 0, 0], records.__getitem__)
    with pytest.raises(InternalError, match="split sizes"):
        _check_disjoint(candidates, codes, [1, 1, 0], records.__getitem__)


def test_worker_processes_hand_rendered_lines_over_in_files_that_are_removed(tmp_path, monkeypatch):
    import tempfile

    rng = random.Random(5)
    path = tmp_path / "x.jsonl"
    path.write_bytes(nasty_file(rng, "classification", 2000))
    scan = scan_dataset(path, "classification", rules=DatasetChecks(min_rows=10), block_bytes=4096)
    staging = tmp_path / "staging"
    staging.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(staging))
    import fastuner.data.write as write_module

    read = []
    real = write_module._read_rendered
    monkeypatch.setattr(write_module, "_read_rendered", lambda *a: read.append(a[0]) or real(*a))
    inline = write_splits(scan, LocalObjectStore(tmp_path / "a"), workers=1)
    assert not read
    parallel = write_splits(scan, LocalObjectStore(tmp_path / "b"), workers=2)
    assert parallel == inline
    assert len(read) == len(scan.layout.block_sizes) and read[0].startswith(str(staging))
    assert list(staging.iterdir()) == []
    data = path.read_bytes()
    at = data.index(b"\n", len(data) // 2)
    path.write_bytes(data[:at] + b" " + data[at + 1:])  # a line joined to the next: same size
    with pytest.raises(DiagnosticsError, match="changed since it was validated"):
        write_splits(scan, LocalObjectStore(tmp_path / "c"), workers=2)
    assert list(staging.iterdir()) == []


@pytest.mark.parametrize("seed", range(40))
def test_blocks_scan_the_same_or_go_to_the_reference(seed):
    """Block by block: the fast scan equals the reference's, or declines (None) exactly when the block
    has a bad row (the reference then reports it)."""
    rng = random.Random(2000 + seed)
    task = ("classification", "text_generation")[seed % 2]
    lines = nasty_file(rng, task, rng.randint(1, 300)).split(b"\n")
    if seed % 3 == 0:
        for _ in range(rng.randint(1, 3)):
            lines[rng.randrange(len(lines))] = bad_line(rng, 0)
    data = b"\n".join(lines) + b"\n"
    limits = limits_for(Task(task), DatasetChecks(max_input_chars=rng.choice([64, 8192])))
    block = (b"", data, len(data))
    for first in (True, False):
        reference = scan_block(block, limits, seed, first)
        fast = scan_block_fast(block, limits, seed, first)
        if reference.n_errors:
            assert fast is None
        else:
            assert fast == reference


def _worker_pids(pool) -> set[int]:
    return set(pool.submit(os.getpid).result() for _ in range(8))


def test_a_pool_that_ended_cleanly_is_reused_then_retired(monkeypatch):
    from fastuner.data import blocks

    monkeypatch.setattr(blocks, "POOL_IDLE_SECONDS", 60.0)
    with blocks.worker_pool(2) as first:
        pids = _worker_pids(first)
    with blocks.worker_pool(2) as again:
        assert again is first and _worker_pids(again) <= pids
        with blocks.worker_pool(2) as concurrent:  # in use: a second call gets its own pool
            assert concurrent is not first
    with blocks.worker_pool(2) as latest:  # the pool that ended last is the one kept
        assert latest is first
    with pytest.raises(RuntimeError), blocks.worker_pool(2) as failing:
        assert failing is latest
        raise RuntimeError("a failed scan")
    with blocks.worker_pool(2) as fresh:  # a pool whose call failed was stopped, not kept
        assert fresh is not latest
    assert blocks._idle[0] is fresh
    monkeypatch.setattr(blocks, "POOL_IDLE_SECONDS", 0.05)
    with blocks.worker_pool(2) as short:
        assert short is fresh
    import time

    deadline = time.monotonic() + 10
    while blocks._idle is not None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert blocks._idle is None  # retired after its idle time


def test_scan_then_write_share_one_pool(tmp_path):
    from fastuner.data import blocks

    path = tmp_path / "x.jsonl"
    path.write_bytes(nasty_file(random.Random(8), "qa", 1500))
    scan = scan_dataset(path, "qa", rules=DatasetChecks(min_rows=10), workers=2, block_bytes=4096)
    kept = blocks._idle[0]
    write_splits(scan, LocalObjectStore(tmp_path / "s"), workers=2)
    assert blocks._idle[0] is kept
