"""A deployment's metrics as `MetricsSource` returns them (fastuner/providers/base.py), whatever measured
them: the shared shape and the arithmetic both sources need (percentiles from a latency histogram)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))


def counts(adapter: str | None, *, invocations: float = 0, errors_4xx: float = 0, errors_5xx: float = 0,
           latency_ms: dict[str, float | None] | None = None, cache: dict[str, int] | None = None) -> dict[str, Any]:
    """One row of the metrics: an adapter's (None: the base model's), or the endpoint's."""
    return {"adapter": adapter, "invocations": int(invocations), "errors_4xx": int(errors_4xx),
            "errors_5xx": int(errors_5xx),
            "latency_ms": latency_ms or {name: None for name, _ in PERCENTILES}, "cache": cache}


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float | None:
    """The q-quantile of a cumulative histogram [(upper bound, count), ..., (inf, total)], interpolated
    linearly inside the bucket it falls in, as Prometheus's `histogram_quantile` does (the last finite
    bound when it falls in the +Inf bucket). None without observations."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            if cumulative == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (cumulative - below)
        lower, below = bound, cumulative
    return lower


def total(rows: Iterable[dict[str, Any]], key: str) -> int:
    return sum(int(r.get(key) or 0) for r in rows)
