"""A SageMaker deployment's metrics from CloudWatch, in one GetMetricData call (`fastuner show
deployment.NAME`): invocations, 4xx and 5xx errors and latency percentiles per adapter, and for the
project's own server its adapter cache.

Where CloudWatch has them:
- `lmi` mode: SageMaker publishes each inference component's invocation metrics in `AWS/SageMaker` with
  the dimension `InferenceComponentName`: `Invocations`, `Invocation4XXErrors`, `Invocation5XXErrors`
  (sums) and `ModelLatency` (microseconds; extended statistics p50, p95, p99). One row per adapter's
  component and one for the base component.
- `serve` mode: SageMaker sees one model, so per adapter there is only what the server publishes: one
  CloudWatch Embedded Metric Format line per request on its stdout (containers/serve/README.md), which
  CloudWatch turns into metrics in the namespace `fastuner/serve` with the dimensions `EndpointName` and
  `Adapter`: `Invocations`, `Invocation4XXErrors`, `Invocation5XXErrors`, `Latency` (milliseconds),
  `AdapterCacheHits`, `AdapterCacheMisses`, `AdapterLoads`. The endpoint's own row is SageMaker's
  (`EndpointName` and `VariantName`).

The window is one period (the whole `--since`, whole minutes), so each query answers one datapoint:
sums are the window's, percentiles the window's. Every query goes in one request (up to GetMetricData's
500; a deployment of more than 70 adapters takes more than one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastuner.providers.base import ProviderError
from fastuner.providers.metrics import PERCENTILES, counts, total
from fastuner.providers.sagemaker.errors import provider_errors
from fastuner.state.model import ResourceState

SAGEMAKER_NAMESPACE = "AWS/SageMaker"
SERVE_NAMESPACE = "fastuner/serve"  # what containers/serve publishes through EMF
DEFAULT_VARIANT = "AllTraffic"
MAX_QUERIES = 500  # GetMetricData's limit per request
BASE, UNKNOWN = "__base__", "__unknown__"  # the server's Adapter values for the base model and unknown names

# row field -> (metric name, statistic, scale to the unit shown)
_SUMS = {"invocations": "Invocations", "errors_4xx": "Invocation4XXErrors", "errors_5xx": "Invocation5XXErrors"}
_CACHE = {"hits": "AdapterCacheHits", "misses": "AdapterCacheMisses", "loads": "AdapterLoads"}


@dataclass(frozen=True)
class _Target:
    """One row of the answer and where CloudWatch keeps its metrics."""

    row: str  # "adapter:NAME", "base" or "endpoint"
    namespace: str
    dimensions: tuple[tuple[str, str], ...]
    latency: str  # the latency metric's name
    latency_scale: float  # to milliseconds
    cache: bool = False


class SageMakerMetrics:
    """`MetricsSource` for SageMaker deployments (reads only; one GetMetricData call)."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def metrics(self, rs: ResourceState, since: datetime, until: datetime) -> dict[str, Any]:
        outputs = rs.outputs or {}
        endpoint = outputs.get("endpoint_name")
        if not endpoint:
            raise ProviderError(f"{rs.address} records no SageMaker endpoint (is it still being created?)",
                                "Run `fastuner apply` to finish it.")
        mode = outputs.get("mode") or "lmi"
        adapters = _names(outputs.get("adapters"))
        targets = list(_targets(outputs, endpoint, mode, adapters))
        start, end, period = window(since, until)
        queries, fields = [], {}
        for t in targets:
            for field, query in _queries(t, period):
                query["Id"] = f"m{len(queries)}"
                fields[query["Id"]] = (t.row, field)
                queries.append(query)
        values, partial = self._fetch(queries, start, end)
        rows: dict[str, dict[str, Any]] = {}
        for t in targets:
            got = {field: values.get(qid) for qid, (row, field) in fields.items() if row == t.row}
            latency = {key: _percentile(got.get(key), t.latency_scale) for key, _ in PERCENTILES}
            cache = {key: int(sum(got.get(key) or [])) for key in _CACHE} if t.cache else None
            name = t.row.removeprefix("adapter:") if t.row.startswith("adapter:") else None
            rows[t.row] = counts(name if t.row != "endpoint" else "*",
                                 **{key: sum(got.get(key) or []) for key in _SUMS}, latency_ms=latency, cache=cache)
        shown = [rows[f"adapter:{a}"] for a in adapters]
        if "base" in rows and (mode == "lmi" or rows["base"]["invocations"]):
            shown.append(rows["base"])
        if rows.get(f"adapter:{UNKNOWN}", {}).get("invocations"):
            shown.append(rows[f"adapter:{UNKNOWN}"])
        notes = ["CloudWatch publishes a minute or two after the requests."]
        if mode == "lmi":
            notes.append("Latency is SageMaker's ModelLatency: the container's time, without the network and "
                         "SageMaker's overhead.")
            cache = None
        else:
            notes.append(f"Per-adapter counts, latency and cache are the server's own ({SERVE_NAMESPACE}, from its "
                         "log lines); the endpoint row is SageMaker's.")
            cache = {key: total((r["cache"] or {} for r in rows.values() if r["cache"]), key) for key in _CACHE}
            if rows["endpoint"]["invocations"] and not total(shown, "invocations"):
                notes.append("The endpoint served requests but the server published no per-adapter metrics: its "
                             "model's environment must set FASTUNER_ENDPOINT_NAME (containers/serve/README.md).")
        if partial:
            notes.append(f"CloudWatch answered only part of the data ({', '.join(sorted(partial))}).")
        return {"source": "cloudwatch", "since": start.isoformat(), "until": end.isoformat(), "adapters": shown,
                "endpoint": rows.get("endpoint"), "cache": cache, "notes": notes}

    def _fetch(self, queries: list[dict[str, Any]], start: datetime, end: datetime) -> tuple[dict[str, list[float]], set[str]]:
        """Every query's values by Id, and the statuses other than Complete."""
        cloudwatch = self.session.client("cloudwatch")
        values: dict[str, list[float]] = {}
        partial: set[str] = set()
        with provider_errors("reading the deployment's metrics from CloudWatch", "cloudwatch"):
            for chunk in range(0, len(queries), MAX_QUERIES):
                token = None
                while True:
                    request: dict[str, Any] = {"MetricDataQueries": queries[chunk:chunk + MAX_QUERIES],
                                               "StartTime": start, "EndTime": end}
                    if token:
                        request["NextToken"] = token
                    answer = cloudwatch.get_metric_data(**request)
                    for result in answer.get("MetricDataResults") or []:
                        values.setdefault(result["Id"], []).extend(result.get("Values") or [])
                        if result.get("StatusCode") not in (None, "Complete"):
                            partial.add(result["StatusCode"])
                    token = answer.get("NextToken")
                    if not token:
                        break
        return values, partial


def window(since: datetime, until: datetime) -> tuple[datetime, datetime, int]:
    """Whole minutes around [since, until] and one period that covers them (CloudWatch wants a multiple
    of 60 s, of 300 s for data older than 15 days, of 3600 s beyond 63 days)."""
    start = since.replace(second=0, microsecond=0)
    end = until.replace(second=0, microsecond=0)
    if end < until:
        end += timedelta(minutes=1)
    seconds = max(60, int((end - start).total_seconds()))
    age = until - start
    step = 3600 if age > timedelta(days=63) else 300 if age > timedelta(days=15) else 60
    return start, end, math.ceil(seconds / step) * step


def _names(adapters: Any) -> list[str]:
    if isinstance(adapters, Mapping):
        return sorted(adapters)
    return [str(a) for a in adapters or []]


def _targets(outputs: Mapping[str, Any], endpoint: str, mode: str, adapters: list[str]) -> Iterator[_Target]:
    if mode == "lmi":
        components = outputs.get("components") or {}
        for name in adapters:
            if components.get(name):
                yield _Target(f"adapter:{name}", SAGEMAKER_NAMESPACE, (("InferenceComponentName", components[name]),),
                              "ModelLatency", 1e-3)
        if outputs.get("base_component"):
            yield _Target("base", SAGEMAKER_NAMESPACE, (("InferenceComponentName", outputs["base_component"]),),
                          "ModelLatency", 1e-3)
        return
    for name in adapters:
        yield _Target(f"adapter:{name}", SERVE_NAMESPACE, (("EndpointName", endpoint), ("Adapter", name)),
                      "Latency", 1.0, cache=True)
    yield _Target("base", SERVE_NAMESPACE, (("EndpointName", endpoint), ("Adapter", BASE)), "Latency", 1.0, cache=True)
    yield _Target(f"adapter:{UNKNOWN}", SERVE_NAMESPACE, (("EndpointName", endpoint), ("Adapter", UNKNOWN)),
                  "Latency", 1.0)
    variant = outputs.get("variant_name") or DEFAULT_VARIANT
    yield _Target("endpoint", SAGEMAKER_NAMESPACE, (("EndpointName", endpoint), ("VariantName", variant)),
                  "ModelLatency", 1e-3)


def _queries(t: _Target, period: int) -> Iterator[tuple[str, dict[str, Any]]]:
    metrics = [(field, name, "Sum") for field, name in _SUMS.items()]
    metrics += [(key, t.latency, key) for key, _ in PERCENTILES]
    if t.cache:
        metrics += [(field, name, "Sum") for field, name in _CACHE.items()]
    for field, name, stat in metrics:
        yield field, {"MetricStat": {"Metric": {"Namespace": t.namespace, "MetricName": name,
                                                "Dimensions": [{"Name": k, "Value": v} for k, v in t.dimensions]},
                                     "Period": period, "Stat": stat}, "ReturnData": True}


def _percentile(values: list[float] | None, scale: float) -> float | None:
    """The window's percentile in milliseconds (one datapoint; should CloudWatch split the window, the
    highest, which overstates rather than hides a slow period)."""
    if not values:
        return None
    return round(max(values) * scale, 3)
