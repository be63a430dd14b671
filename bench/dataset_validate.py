"""Benchmark: validate + deduplicate + split a large JSONL dataset, against sha256sum and pandas.

    python bench/dataset_validate.py                  # 1 GB classification file in a temp dir
    python bench/dataset_validate.py --size-mb 100    # a quicker run
    python bench/dataset_validate.py --keep --dir /tmp/ds   # keep the generated file

It generates a realistic file (mixed input lengths from a few words to thousands of characters, some
non-ASCII text, a skewed label distribution, an extra "id" field, ~2% duplicates, some of them
differing only in surrounding whitespace), then, each in a fresh child process:
- `sha256sum` on the file (the throughput yardstick);
- `scan_dataset` (validate + dedup + split, the file's SHA-256 included), then `write_splits`
  into a temporary store; peak memory: the main process's VmHWM (exact), and the largest worker and
  the sum over the process tree (main + workers) sampled every 20 ms from /proc. (Not getrusage:
  a child started with vfork inherits its parent's peak RSS in ru_maxrss.) The scan runs twice:
  the fast path (the default) and the reference path (`fast=False`: dict-based deduplication and
  splitting); both must give the same dataset version, counts and split sizes (checked);
- the pandas + scikit-learn pipeline a user would write (read_json(lines=True), validation with pandas
  string ops, drop_duplicates, two stratified train_test_split calls, to_json), on a smaller file
  (`--pandas-mb`, default 200) because at 1 GB it needs many GB of memory; fastuner runs on that same
  smaller file for the comparison;
- stdlib json vs orjson parsing of the file's first 32 MB (one process), to justify the dependency.
Prints a table and one JSON line of the figures. pandas and scikit-learn are benchmark-only
dependencies.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

LABELS = ["billing", "refund", "shipping", "account", "technical", "cancel", "upgrade", "feedback",
          "privacy", "warranty", "store_hours", "other"]
LABEL_WEIGHTS = [30, 18, 15, 10, 8, 6, 4, 3, 2, 2, 1, 1]
WORDS = ["the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are", "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by", "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there", "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other", "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make", "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number", "no", "way", "could", "people", "my", "than", "first", "water", "been", "call", "who", "oil", "its", "now", "find", "long", "down", "day", "did", "get", "come", "made", "may", "part", "order", "refund", "parcel", "invoice", "password", "router", "subscription", "warranty", "delivery", "account", "charge", "payment"]
WORDS_INTL = ["café", "naïve", "Übergröße", "日本語", "пример", "δοκιμή", "emoji🙂", "façade", "jalapeño",
              "Straße", "ångström", "crème brûlée"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--pandas-mb", type=float, default=200,
                        help="size of the file for the pandas comparison (0 to skip)")
    parser.add_argument("--task", choices=["classification", "text_generation"], default="classification")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--non-ascii", type=float, default=0.3,
                        help="share of rows with non-ASCII text (they need Unicode normalisation)")
    parser.add_argument("--dir", default=None, help="where to generate (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip timing the reference path (scan_dataset(fast=False))")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(json.loads(args.child))

    workdir = Path(args.dir or tempfile.mkdtemp(prefix="fastuner-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    figures: dict = {"task": args.task, "cores": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        path = workdir / f"bench-{args.task}.jsonl"
        t0 = time.perf_counter()
        rows = generate(path, int(args.size_mb * 1e6), args.task, args.non_ascii)
        size = path.stat().st_size
        figures.update(file_mb=round(size / 1e6, 1), rows=rows, generate_s=round(time.perf_counter() - t0, 2))
        print(f"generated {size / 1e6:,.0f} MB, {rows:,} rows in {figures['generate_s']} s: {path}", flush=True)

        figures["sha256sum_s"], figures["sha256sum_cpu_s"] = _time_sha256sum(path)
        run = _run_child({"op": "fastuner", "path": str(path), "task": args.task, "workers": args.workers,
                          "store": str(workdir / "store")})
        figures["fastuner"] = run
        if not args.no_reference:
            reference = _run_child({"op": "fastuner", "path": str(path), "task": args.task,
                                    "workers": args.workers, "fast": False})
            figures["fastuner_reference"] = reference
            if any(reference[k] != run[k] for k in ("version", "counts", "splits")):
                raise SystemExit(f"the fast and reference paths disagree: {run} vs {reference}")
        figures["json_vs_orjson"] = _run_child({"op": "parsers", "path": str(path), "mb": 32})

        if args.pandas_mb > 0:
            small = path if args.pandas_mb >= args.size_mb else _head(path, workdir / "small.jsonl",
                                                                        int(args.pandas_mb * 1e6))
            small_mb = small.stat().st_size / 1e6
            figures["small_mb"] = round(small_mb, 1)
            figures["fastuner_small"] = (run if small == path else _run_child(
                {"op": "fastuner", "path": str(small), "task": args.task, "workers": args.workers,
                 "store": str(workdir / "store-small")}))
            figures["pandas_small"] = _run_child({"op": "pandas", "path": str(small), "task": args.task,
                                                  "out": str(workdir / "pandas-out")})
        figures["load_after"] = os.getloadavg()[0]
        _report(figures, size)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


def generate(path: Path, size: int, task: str, non_ascii: float = 0.3, seed: int = 7) -> int:
    """Write about `size` bytes of JSONL; returns the number of rows."""
    import orjson

    rng = random.Random(seed)
    sentences = []  # ASCII
    for _ in range(20000):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "?", "!"]))
    accented = []  # each with a non-ASCII word or two
    for _ in range(5000):
        words = rng.choices(WORDS, k=rng.randint(4, 24))
        words[rng.randrange(len(words))] = rng.choice(WORDS_INTL)
        accented.append(" ".join(words).capitalize() + ".")
    recent: list[dict] = []
    second = "label" if task == "classification" else "target"
    rows = written = 0
    batch: list[bytes] = []
    with open(path, "wb") as out:
        while written < size:
            if recent and rng.random() < 0.02:
                record = dict(rng.choice(recent))  # a duplicate, sometimes with extra whitespace
                if rng.random() < 0.3:
                    record["input"] = "  " + record["input"] + "\t"
                    record["id"] = rows
            else:
                n = min(int(rng.lognormvariate(1.3, 0.9)) + 1, 120)  # sentences: median ~4, long tail
                chosen = rng.choices(sentences, k=n)
                if rng.random() < non_ascii:
                    chosen[rng.randrange(n)] = rng.choice(accented)
                text = " ".join(chosen)[:8000]
                if task == "classification":
                    value = rng.choices(LABELS, LABEL_WEIGHTS)[0]
                else:
                    value = " ".join(rng.choices(sentences, k=rng.randint(1, 6)))[:2000]
                record = {"input": text, second: value, "id": rows}
                if len(recent) < 1000:
                    recent.append(record)
                else:
                    recent[rng.randrange(1000)] = record
            line = orjson.dumps(record) + b"\n"
            batch.append(line)
            written += len(line)
            rows += 1
            if len(batch) >= 4096:
                out.write(b"".join(batch))
                batch.clear()
        out.write(b"".join(batch))
    return rows


def _head(path: Path, dest: Path, size: int) -> Path:
    """The first `size` bytes of `path`, up to a line end, copied to `dest`."""
    with open(path, "rb") as source, open(dest, "wb") as out:
        left = size
        while left > 0:
            chunk = source.read(min(left, 1 << 20))
            left -= len(chunk)
            out.write(chunk if left > 0 else chunk[:chunk.rfind(b"\n") + 1])
    return dest


def _time_sha256sum(path: Path) -> tuple[float, float]:
    """Best wall time of two runs (after one to warm the page cache), and its CPU time."""
    subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
    best = (float("inf"), 0.0)
    for _ in range(2):
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        subprocess.run(["sha256sum", str(path)], check=True, capture_output=True)
        best = min(best, (time.perf_counter() - t0, _cpu_seconds() - cpu0))
    return round(best[0], 3), round(best[1], 2)


def _cpu_seconds() -> float:
    """CPU time of this process, its finished children and its live descendants so far (fastuner
    keeps a finished pool's workers alive for a while, so their time is read from /proc)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime + _live_descendants_cpu()


def _live_descendants_cpu() -> float:
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime, stime
    me = os.getpid()
    total = 0
    for pid, used in ticks.items():
        p = parents.get(pid, 0)
        while p and p != me:
            p = parents.get(p, 0)
        if p == me:
            total += used
    return total / os.sysconf("SC_CLK_TCK")


def _run_child(job: dict) -> dict:
    """Run `job` in a fresh interpreter so that its peak memory is its own."""
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _child(job: dict) -> int:
    op = job["op"]
    if op == "fastuner":
        result = _child_fastuner(job)
    elif op == "pandas":
        result = _child_pandas(job)
    else:
        result = _child_parsers(job)
    print(json.dumps(result))
    return 0


def _child_fastuner(job: dict) -> dict:
    from fastuner.data import LocalObjectStore, scan_dataset, write_splits

    sampler = _TreeSampler()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    scan = scan_dataset(job["path"], job["task"], workers=job["workers"], fast=job.get("fast", True))
    scan_s = time.perf_counter() - t0
    scan_cpu = _cpu_seconds() - cpu0
    scan_tree_mb, worker_mb = sampler.take_peak()
    main_mb = _vm_hwm_mb()
    scanned = {"scan_s": round(scan_s, 3), "scan_cpu_s": round(scan_cpu, 2), "scan_main_peak_mb": round(main_mb, 1),
               "scan_worker_peak_mb": round(worker_mb, 1), "scan_tree_peak_mb": round(scan_tree_mb, 1),
               "counts": scan.counts.to_dict(), "splits": scan.split_rows, "version": scan.version}
    if "store" not in job:
        sampler.stop()
        return scanned
    t1 = time.perf_counter()
    outputs = write_splits(scan, LocalObjectStore(job["store"]), workers=job["workers"])
    write_s = time.perf_counter() - t1
    write_cpu = _cpu_seconds() - cpu0 - scan_cpu
    write_tree_mb, _ = sampler.take_peak()
    sampler.stop()
    return {**scanned, "write_s": round(write_s, 3), "write_cpu_s": round(write_cpu, 2),
            "write_tree_peak_mb": round(write_tree_mb, 1), "manifest_key": outputs["manifest_key"]}


def _child_pandas(job: dict) -> dict:
    import pandas as pd
    from sklearn.model_selection import train_test_split

    second = "label" if job["task"] == "classification" else "target"
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    df = pd.read_json(job["path"], lines=True, dtype=False)
    for name in ("input", second):
        if name not in df.columns or not df[name].map(type).eq(str).all():
            raise SystemExit(f"bad rows: {name} missing or not a string")
        df[name] = df[name].str.normalize("NFC").str.strip()
    lengths = df["input"].str.len()
    bad = (lengths < 1) | (lengths > 8192) | (df[second].str.len() < 1)
    if second == "target":
        bad |= df[second].str.len() > 2048
    if bad.any():
        raise SystemExit(f"{int(bad.sum())} bad rows")
    df = df[["input", second]].drop_duplicates()
    if len(df) < 100:
        raise SystemExit("too few rows")
    stratify = df[second] if second == "label" else None
    train, rest = train_test_split(df, test_size=0.2, random_state=42, stratify=stratify)
    validation, test = train_test_split(rest, test_size=0.5, random_state=42,
                                        stratify=rest[second] if second == "label" else None)
    split_s = time.perf_counter() - t0
    split_cpu = _cpu_seconds() - cpu0
    t1 = time.perf_counter()
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", train), ("validation", validation), ("test", test)):
        part.to_json(out / f"{name}.jsonl", orient="records", lines=True, force_ascii=False)
    write_s = time.perf_counter() - t1
    return {"split_s": round(split_s, 3), "write_s": round(write_s, 3), "split_cpu_s": round(split_cpu, 2),
            "maxrss_mb": round(_vm_hwm_mb(), 1),
            "distinct": len(df), "splits": [len(train), len(validation), len(test)]}


def _child_parsers(job: dict) -> dict:
    import orjson

    with open(job["path"], "rb") as source:
        data = source.read(int(job["mb"] * 1e6))
    lines = data[:data.rfind(b"\n")].split(b"\n")
    out = {}
    for name, loads in (("json", json.loads), ("orjson", orjson.loads)):
        t0 = time.perf_counter()
        for line in lines:
            loads(line)
        out[f"{name}_loads_mb_s"] = round(len(data) / 1e6 / (time.perf_counter() - t0), 1)
    objects = [orjson.loads(line) for line in lines[:50000]]
    encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    for name, dumps in (("json", lambda o: encode(o).encode()), ("orjson", orjson.dumps)):
        t0 = time.perf_counter()
        for obj in objects:
            dumps({"input": obj["input"], "label": obj.get("label", obj.get("target"))})
        out[f"{name}_dumps_us_row"] = round((time.perf_counter() - t0) / len(objects) * 1e6, 2)
    return out


def _vm_hwm_mb() -> float:
    """Peak RSS of this process's address space, in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


class _TreeSampler:
    """Peak total RSS of this process and its descendants, and the largest descendant's, sampled from
    /proc every 20 ms."""

    def __init__(self) -> None:
        self._peak = (0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def take_peak(self) -> tuple[float, float]:
        """(tree, largest descendant) peaks since the last call, in MiB."""
        peak, self._peak = self._peak, (0, 0)
        now = self._sample()
        return max(peak[0], now[0]) / 1024, max(peak[1], now[1]) / 1024

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            total, largest = self._sample()
            self._peak = (max(self._peak[0], total), max(self._peak[1], largest))

    @staticmethod
    def _sample() -> tuple[int, int]:
        """Total VmRSS in KiB of this process and its descendants, and the largest descendant's."""
        parents: dict[int, int] = {}
        rss: dict[int, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/status") as status:
                    fields = dict(line.split(":", 1) for line in status if ":" in line)
            except OSError:
                continue
            pid = int(entry)
            parents[pid] = int(fields["PPid"])
            rss[pid] = int(fields.get("VmRSS", "0 kB").split()[0])
        me = os.getpid()
        total = largest = 0
        for pid in rss:
            p = pid
            while p and p != me:
                p = parents.get(p, 0)
            if p == me:
                total += rss[pid]
                if pid != me:
                    largest = max(largest, rss[pid])
        return total, largest


def _report(figures: dict, size: int) -> None:
    mb = size / 1e6
    run = figures["fastuner"]
    sha_mb_s = mb / figures["sha256sum_s"]
    scan_mb_s = mb / run["scan_s"]
    figures["ratio_vs_sha256sum"] = round(scan_mb_s / sha_mb_s, 2)
    figures["scan_cpu_s_per_gb"] = round(run["scan_cpu_s"] / mb * 1000, 1)
    rows = [("step", "wall", "MB/s", "CPU s", "peak memory"),
            ("sha256sum", f"{figures['sha256sum_s']:.2f} s", f"{sha_mb_s:,.0f}", f"{figures['sha256sum_cpu_s']:.2f}", ""),
            ("fastuner scan (validate+dedup+split+sha256)", f"{run['scan_s']:.2f} s", f"{scan_mb_s:,.0f}",
             f"{run['scan_cpu_s']:.2f}",
             f"tree {run['scan_tree_peak_mb']:.0f} MB (main {run['scan_main_peak_mb']:.0f}, "
             f"largest worker {run['scan_worker_peak_mb']:.0f})"),
            *([("fastuner scan, reference path (fast=False)", f"{ref['scan_s']:.2f} s", f"{mb / ref['scan_s']:,.0f}",
                f"{ref['scan_cpu_s']:.2f}", f"tree {ref['scan_tree_peak_mb']:.0f} MB")]
              if (ref := figures.get("fastuner_reference")) else []),
            ("fastuner write_splits", f"{run['write_s']:.2f} s", f"{mb / run['write_s']:,.0f}",
             f"{run['write_cpu_s']:.2f}", f"tree {run['write_tree_peak_mb']:.0f} MB"),
            ("fastuner scan + write", f"{run['scan_s'] + run['write_s']:.2f} s",
             f"{mb / (run['scan_s'] + run['write_s']):,.0f}", f"{run['scan_cpu_s'] + run['write_cpu_s']:.2f}", "")]
    if "pandas_small" in figures:
        small, pandas, small_mb = figures["fastuner_small"], figures["pandas_small"], figures["small_mb"]
        figures["speedup_vs_pandas"] = round(pandas["split_s"] / small["scan_s"], 2)
        figures["speedup_vs_pandas_with_write"] = round(
            (pandas["split_s"] + pandas["write_s"]) / (small["scan_s"] + small["write_s"]), 2)
        figures["cpu_ratio_vs_pandas"] = round(pandas["split_cpu_s"] / small["scan_cpu_s"], 2)
        on = f"on {small_mb:.0f} MB"
        rows += [
            (f"pandas+sklearn read/validate/dedup/split {on}", f"{pandas['split_s']:.2f} s",
             f"{small_mb / pandas['split_s']:,.0f}", f"{pandas['split_cpu_s']:.2f}", f"{pandas['maxrss_mb']:.0f} MB"),
            (f"pandas to_json of the splits {on}", f"{pandas['write_s']:.2f} s", "", "", ""),
            (f"fastuner scan {on}", f"{small['scan_s']:.2f} s", f"{small_mb / small['scan_s']:,.0f}",
             f"{small['scan_cpu_s']:.2f}", f"tree {small['scan_tree_peak_mb']:.0f} MB"),
            (f"fastuner write_splits {on}", f"{small['write_s']:.2f} s", "", f"{small['write_cpu_s']:.2f}", ""),
        ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    print(f"\n{figures['file_mb']:,.0f} MB, {figures['rows']:,} rows, task {figures['task']}, "
          f"{figures['cores']} cores, load average {figures['load_before']:.1f} before, "
          f"{figures['load_after']:.1f} after")
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
    print(f"scan throughput / sha256sum throughput: {figures['ratio_vs_sha256sum']:.2f} (goal >= 0.5); "
          f"scan CPU: {figures['scan_cpu_s_per_gb']} CPU-s per GB")
    if "speedup_vs_pandas" in figures:
        print(f"speed-up over pandas+sklearn: {figures['speedup_vs_pandas']:.1f}x wall "
              f"({figures['cpu_ratio_vs_pandas']:.1f}x less CPU) for validate+dedup+split, "
              f"{figures['speedup_vs_pandas_with_write']:.1f}x wall with writing the splits (goal >= 3x)")
    parsers = figures["json_vs_orjson"]
    print(f"parsing: json.loads {parsers['json_loads_mb_s']} MB/s, orjson.loads {parsers['orjson_loads_mb_s']} MB/s; "
          f"record dumps: json {parsers['json_dumps_us_row']} us, orjson {parsers['orjson_dumps_us_row']} us")
    print(json.dumps(figures, sort_keys=True))


if __name__ == "__main__":
    sys.exit(main())
