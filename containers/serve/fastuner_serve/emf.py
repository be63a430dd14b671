"""Per-request metrics for CloudWatch, as Embedded Metric Format (EMF) log lines on stdout.

On SageMaker the container's stdout goes to CloudWatch Logs, and CloudWatch extracts metrics from every
JSON line that carries an `_aws` block: no AWS call from the server, no credentials, no dependency. One
line per `/invocations` request, in the namespace `fastuner/serve` with the dimensions `EndpointName`
and `Adapter` (`__base__` for the base model, `__unknown__` for a name the server does not know):

    Invocations (1), Invocation4XXErrors, Invocation5XXErrors (0 or 1), Latency (milliseconds),
    AdapterCacheHits, AdapterCacheMisses (0 or 1, for a request that used an adapter),
    AdapterLoads (1) and AdapterLoadTime (milliseconds) when the request loaded its adapter.

Sums give counts per adapter, the Latency percentiles come from the individual values (CloudWatch keeps
them), which is what `fastuner show deployment.NAME` reads. Only written when the endpoint's name is set
(`--emf-endpoint`, or `FASTUNER_ENDPOINT_NAME` in the model's environment on SageMaker); a local server
keeps stdout for its one `listening on` line.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

NAMESPACE = "fastuner/serve"
DIMENSIONS = ["EndpointName", "Adapter"]
BASE = "__base__"
UNITS = {"Invocations": "Count", "Invocation4XXErrors": "Count", "Invocation5XXErrors": "Count",
         "Latency": "Milliseconds", "AdapterCacheHits": "Count", "AdapterCacheMisses": "Count",
         "AdapterLoads": "Count", "AdapterLoadTime": "Milliseconds"}

_lock = threading.Lock()


def invocation_record(endpoint: str, adapter: str | None, status: int, seconds: float, *, cache: str = "",
                      load_seconds: float | None = None, now: float) -> dict[str, Any]:
    """The EMF document of one request. `cache`: "hit", "miss" or "" (no adapter, or refused before)."""
    values: dict[str, float] = {"Invocations": 1, "Invocation4XXErrors": int(400 <= status < 500),
                                "Invocation5XXErrors": int(status >= 500), "Latency": round(seconds * 1000, 3)}
    if cache:
        values["AdapterCacheHits"] = int(cache == "hit")
        values["AdapterCacheMisses"] = int(cache == "miss")
    if load_seconds is not None:
        values["AdapterLoads"] = 1
        values["AdapterLoadTime"] = round(load_seconds * 1000, 3)
    return {
        "_aws": {"Timestamp": int(now * 1000),
                 "CloudWatchMetrics": [{"Namespace": NAMESPACE, "Dimensions": [DIMENSIONS],
                                        "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values]}]},
        "EndpointName": endpoint, "Adapter": adapter or BASE, "Status": status, **values,
    }


def write(record: dict[str, Any], out: TextIO | None = None) -> None:
    """One line, whole (lines from request threads never interleave)."""
    line = json.dumps(record, separators=(",", ":")) + "\n"
    stream = out or sys.stdout
    with _lock:
        stream.write(line)
        stream.flush()
