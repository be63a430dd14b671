"""Prometheus text exposition (format 0.0.4), written by hand.

A dozen series with fixed names do not justify a dependency: `prometheus_client` would add a package
to every serving image and its process collector, and the exact names, labels and buckets (which the
local executor's idle TTL and the benchmark read) are clearer as plain code here.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import defaultdict

# Fine enough for P50/P95 from 1 ms to 60 s: about 1.5x apart.
LATENCY_BUCKETS = (0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.075,
                   0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0)
LOAD_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
BASE_LABEL = "__base__"  # adapter names cannot start with '_', so this never collides


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1

    def lines(self, name: str, labels: str) -> list[str]:
        sep = "," if labels else ""
        out, cumulative = [], 0
        for bound, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            cumulative += n
            out.append(f'{name}_bucket{{{labels}{sep}le="{format_value(bound)}"}} {cumulative}')
        suffix = f"{{{labels}}}" if labels else ""
        out.append(f"{name}_sum{suffix} {format_value(self.total)}")
        out.append(f"{name}_count{suffix} {self.count}")
        return out


class Metrics:
    """Counters the server updates from many threads; `render` is a consistent snapshot."""

    def __init__(self, *, now: float | None = None):
        self._lock = threading.Lock()
        self.start_time = time.time() if now is None else now
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, Histogram] = {}
        self.cache_hits = self.cache_misses = self.cache_evictions = 0
        self.load_seconds = Histogram(LOAD_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)
        self.inflight = 0
        self.last_invocation = 0.0

    def invocation_started(self, now: float) -> None:
        with self._lock:
            self.inflight += 1
            self.last_invocation = max(self.last_invocation, now)

    def invocation_finished(self, adapter: str | None, status: int, seconds: float, now: float) -> None:
        label = adapter or BASE_LABEL
        with self._lock:
            self.inflight -= 1
            self.last_invocation = max(self.last_invocation, now)
            self.requests[(label, status)] += 1
            self.latency.setdefault(label, Histogram(LATENCY_BUCKETS)).observe(seconds)

    def cache_event(self, *, hit: bool = False, miss: bool = False, evictions: int = 0) -> None:
        with self._lock:
            self.cache_hits += hit
            self.cache_misses += miss
            self.cache_evictions += evictions

    def adapter_loaded(self, seconds: float) -> None:
        with self._lock:
            self.load_seconds.observe(seconds)

    def batch(self, rows: int) -> None:
        with self._lock:
            self.batch_rows.observe(rows)

    def in_flight(self) -> int:
        with self._lock:
            return self.inflight

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The exposition text; `gauges` adds name -> (help, value) from the caller's own state."""
        with self._lock:
            out: list[str] = []
            family(out, "fastuner_requests_total", "counter", "Invocations by adapter and HTTP status.")
            for (adapter, status), n in sorted(self.requests.items()):
                out.append(f'fastuner_requests_total{{adapter="{escape(adapter)}",status="{status}"}} {n}')
            family(out, "fastuner_request_duration_seconds", "histogram",
                   "Invocation latency by adapter, from request line to response.")
            for adapter, hist in sorted(self.latency.items()):
                out.extend(hist.lines("fastuner_request_duration_seconds", f'adapter="{escape(adapter)}"'))
            for name, help_, value in (
                ("fastuner_adapter_cache_hits_total", "Adapter lookups served from the cache.", self.cache_hits),
                ("fastuner_adapter_cache_misses_total", "Adapter lookups that loaded the adapter.",
                 self.cache_misses),
                ("fastuner_adapter_cache_evictions_total", "Adapters evicted from the cache (LRU or replaced).",
                 self.cache_evictions),
            ):
                family(out, name, "counter", help_)
                out.append(f"{name} {value}")
            family(out, "fastuner_adapter_load_seconds", "histogram", "Time to load an adapter into the cache.")
            out.extend(self.load_seconds.lines("fastuner_adapter_load_seconds", ""))
            family(out, "fastuner_batch_rows", "histogram", "Rows per model forward (classification).")
            out.extend(self.batch_rows.lines("fastuner_batch_rows", ""))
            scalars = {
                "fastuner_inflight_requests": ("Invocations being handled now.", self.inflight),
                "fastuner_last_invocation_timestamp_seconds": (
                    "Unix time of the last invocation (start or end); 0 if none. Drives idle TTL.",
                    self.last_invocation),
                "process_start_time_seconds": ("Start time of the process since unix epoch in seconds.",
                                               self.start_time),
                **gauges,
            }
        for name, (help_, value) in scalars.items():
            family(out, name, "gauge", help_)
            out.append(f"{name} {format_value(value)}")
        return "\n".join(out) + "\n"


def family(out: list[str], name: str, kind: str, help_: str) -> None:
    out.append(f"# HELP {name} {help_}")
    out.append(f"# TYPE {name} {kind}")


def escape(value: str) -> str:
    return value.replace("\\", r"\\").replace('"', r"\"").replace("\n", r"\n")


def format_value(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))
