"""The local server's `/metrics` (Prometheus text, containers/serve/README.md) as a deployment's metrics.

The server counts since it started and keeps no history, so the window is its lifetime, whatever
`--since` asks for (said in the notes). Requests by adapter and status give invocations and errors, the
latency histogram the percentiles (interpolated inside its buckets, about 1.5x apart), the cache
counters hits, misses and loads (the server counts those for all adapters together).
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from fastuner.providers.metrics import PERCENTILES, counts, histogram_quantile, total

BASE, UNKNOWN = "__base__", "__unknown__"  # the server's labels for the base model and unknown names
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {k: v.replace(r"\"", '"').replace(r"\n", "\n").replace("\\\\", "\\")
                  for k, v in _LABEL.findall(m.group(2) or "")}
        try:
            out.append((m.group(1), labels, float(m.group(3))))
        except ValueError:
            continue
    return out


def server_metrics(text: str, adapters: list[str], until: datetime) -> dict[str, Any]:
    """The metrics document from the server's exposition; a row for every served adapter (traffic or
    not), the base model's when it was invoked, and the requests that named unknown adapters."""
    requests: dict[str, dict[str, float]] = defaultdict(lambda: {"invocations": 0, "errors_4xx": 0, "errors_5xx": 0})
    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    scalars: dict[str, float] = {}
    for name, labels, value in samples(text):
        adapter = labels.get("adapter")
        if name == "fastuner_requests_total" and adapter is not None:
            status = int(labels.get("status", "0") or 0)
            row = requests[adapter]
            row["invocations"] += value
            row["errors_4xx"] += value if 400 <= status < 500 else 0
            row["errors_5xx"] += value if status >= 500 else 0
        elif name == "fastuner_request_duration_seconds_bucket" and adapter is not None:
            buckets[adapter].append((float(labels.get("le", "inf").replace("+Inf", "inf")), value))
        elif not labels:
            scalars[name] = value
    rows = []
    for label in [*adapters, *sorted(set(requests) - set(adapters) - {BASE, UNKNOWN}), BASE, UNKNOWN]:
        if label not in adapters and label not in requests:
            continue
        latency = {key: _ms(histogram_quantile(q, buckets.get(label, []))) for key, q in PERCENTILES}
        rows.append(counts(None if label == BASE else label, **requests.get(label, {}), latency_ms=latency))
    started = scalars.get("process_start_time_seconds")
    since = datetime.fromtimestamp(started, UTC) if started else None
    cache = {"hits": int(scalars.get("fastuner_adapter_cache_hits_total", 0)),
             "misses": int(scalars.get("fastuner_adapter_cache_misses_total", 0)),
             "loads": int(scalars.get("fastuner_adapter_load_seconds_count", 0)),
             "evictions": int(scalars.get("fastuner_adapter_cache_evictions_total", 0))}
    all_buckets: dict[float, float] = defaultdict(float)
    for series in buckets.values():
        for bound, value in series:
            all_buckets[bound] += value
    endpoint = counts("*", invocations=total(rows, "invocations"), errors_4xx=total(rows, "errors_4xx"),
                      errors_5xx=total(rows, "errors_5xx"),
                      latency_ms={key: _ms(histogram_quantile(q, list(all_buckets.items()))) for key, q in PERCENTILES})
    when = since.isoformat(timespec="seconds") if since else "its start"
    return {"source": "server", "since": since.isoformat() if since else None, "until": until.isoformat(),
            "adapters": rows, "endpoint": endpoint, "cache": cache,
            "notes": [f"Counted by the server since it started ({when}): it keeps no history, so --since "
                      "does not apply."]}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)
