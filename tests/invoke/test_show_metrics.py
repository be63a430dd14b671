"""`fastuner show deployment.NAME`: a deployment's record and what it served. Locally from the server's
`/metrics` (the real server's exposition, produced by containers/serve's own Metrics class, read by
fastuner's parser); on SageMaker from CloudWatch in one GetMetricData call (Stubber: the request as sent,
validated against the service model)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import Stubber

from fastuner.aws.clients import AwsSession
from fastuner.providers.local.servermetrics import server_metrics
from fastuner.providers.metrics import histogram_quantile
from fastuner.providers.sagemaker.metrics import SageMakerMetrics, window
from fastuner.state.model import ResourceState, Status
from tests.invoke.fakeserver import FakeServer, Script
from tests.invoke.test_cli import error_of, make_project

SERVE_DIR = Path(__file__).resolve().parents[2] / "containers" / "serve"
NOW = datetime(2026, 12, 1, 12, 0, 30, tzinfo=UTC)
ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}


def serve_metrics():
    """containers/serve's Metrics class (a separate program: imported from its folder, as its tests do)."""
    if str(SERVE_DIR) not in sys.path:
        sys.path.insert(0, str(SERVE_DIR))
    from fastuner_serve.metrics import Metrics

    return Metrics


def exposition() -> str:
    metrics = serve_metrics()(now=NOW.timestamp() - 600)
    for i in range(100):  # a1: 100 requests, 1 ms .. 100 ms; two of them refused, one failed
        status = 422 if i in (3, 4) else 500 if i == 5 else 200
        metrics.invocation_started(0)
        metrics.invocation_finished("a1", status, (i + 1) / 1000, 0)
    for _ in range(3):
        metrics.invocation_started(0)
        metrics.invocation_finished(None, 200, 0.2, 0)  # the base model
    metrics.invocation_started(0)
    metrics.invocation_finished("__unknown__", 404, 0.001, 0)
    for _ in range(97):
        metrics.cache_event(hit=True)
    metrics.cache_event(miss=True, evictions=1)
    metrics.adapter_loaded(0.02)
    return metrics.render({})


# --- the local server's /metrics --------------------------------------------------------------------


def test_the_servers_exposition_reads_as_counts_percentiles_and_cache() -> None:
    data = server_metrics(exposition(), ["a1", "a2"], NOW)
    rows = {r["adapter"]: r for r in data["adapters"]}
    assert list(rows) == ["a1", "a2", None, "__unknown__"]  # served adapters first, quiet ones too
    a1 = rows["a1"]
    assert (a1["invocations"], a1["errors_4xx"], a1["errors_5xx"]) == (100, 2, 1)
    # 1..100 ms, in buckets about 1.5x apart: within a bucket of the truth
    assert 40 <= a1["latency_ms"]["p50"] <= 60 and 75 <= a1["latency_ms"]["p95"] <= 100
    assert rows["a2"]["invocations"] == 0 and rows["a2"]["latency_ms"] == {"p50": None, "p95": None, "p99": None}
    assert rows[None]["invocations"] == 3 and rows["__unknown__"]["errors_4xx"] == 1
    assert data["endpoint"]["invocations"] == 104
    assert data["cache"] == {"hits": 97, "misses": 1, "loads": 1, "evictions": 1}
    assert data["source"] == "server" and data["since"] == (NOW - timedelta(seconds=600)).isoformat()
    assert "keeps no history" in data["notes"][0]


def test_histogram_quantile_interpolates_inside_a_bucket() -> None:
    buckets = [(0.01, 10.0), (0.02, 30.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.015)  # rank 20: halfway through (0.01, 0.02]
    assert histogram_quantile(0.99, buckets) == 0.02  # in +Inf: the last finite bound
    assert histogram_quantile(0.5, [(0.01, 0.0), (float("inf"), 0.0)]) is None


def test_show_prints_a_local_deployments_metrics(cli, tmp_path) -> None:
    with FakeServer(Script(metrics=exposition())) as server:
        root = make_project(tmp_path, server.url, adapters=("a1", "a2"))
        text = cli("show", "deployment.api", cwd=root)
        as_json = cli("show", "deployment.api", "--json", cwd=root)
    assert text.code == 0, text.text
    assert "Since the server started" in text.out and "the server's /metrics" in text.out
    line = next(ln for ln in text.out.splitlines() if ln.strip("│ ").startswith("a1"))
    assert "100" in line and " 2 " in line
    assert "base model" in text.out and "unknown adapters (404)" in text.out and "whole endpoint" in text.out
    assert "Adapter cache: 97 hits, 1 misses, 1 loads, 1 evictions." in text.out
    data = json.loads(as_json.out)
    assert data["kind"] == "deployment" and data["format_version"] == 1
    assert data["address"] == "deployment.api" and data["window"] == "1h" and data["adapters"] == ["a1", "a2"]
    assert data["metrics"]["adapters"][0]["invocations"] == 100


def test_show_refuses_what_it_cannot_show(cli, tmp_path) -> None:
    with FakeServer(Script(metrics=exposition())) as server:
        root = make_project(tmp_path, server.url)
        assert "--since 2x: invalid duration" in error_of(cli("show", "deployment.api", "--since", "2x", cwd=root))
        assert "deployment.nope is not in state (deployments in state: deployment.api)" in error_of(
            cli("show", "deployment.nope", cwd=root))
        assert "--markdown renders a saved plan" in error_of(cli("show", "deployment.api", "--markdown", cwd=root))
        assert "--since goes with a deployment" in error_of(cli("show", "--since", "3h", cwd=root))
        # another kind's address: its record, as `state show`
        shown = cli("show", "adapter.a1", cwd=root)
    assert shown.code == 0 and "# adapter.a1" in shown.out


def test_show_of_a_dead_local_server_points_at_the_plan(cli, tmp_path) -> None:
    from tests.invoke.fakeserver import closed_port_url

    root = make_project(tmp_path, closed_port_url())
    assert "`fastuner plan` will show it being recreated" in error_of(cli("show", "deployment.api", cwd=root))


def test_an_expired_deployment_shows_its_record_and_no_metrics(cli, tmp_path) -> None:
    root = make_project(tmp_path, "http://127.0.0.1:1", status=Status.EXPIRED)
    run = cli("show", "deployment.api", cwd=root)
    assert run.code == 0 and "No metrics: deployment.api is expired." in run.out


# --- CloudWatch --------------------------------------------------------------------------------------


def deployment(mode: str, **outputs: Any) -> ResourceState:
    base = {"endpoint_name": "demo-ep-api-1a2b3c4d", "mode": mode, "adapters": ["a1", "a2"],
            "base_component": "demo-ep-api-1a2b3c4d-base" if mode == "lmi" else "",
            "components": ({"a1": "demo-ep-api-1a2b3c4d-a1", "a2": "demo-ep-api-1a2b3c4d-a2"} if mode == "lmi"
                           else {"a1": "", "a2": ""})}
    return ResourceState(address="deployment.api", kind="deployment", name="api", status=Status.READY,
                         outputs={**base, **outputs})


def answer(values: dict[str, float], ids: list[str]) -> dict[str, Any]:
    return {"MetricDataResults": [{"Id": i, "Label": i, "StatusCode": "Complete", "Timestamps": [NOW] if i in values
                                   else [], "Values": [values[i]] if i in values else []} for i in ids]}


def fetch(rs: ResourceState, values_by_query: dict[tuple[str, str, str], float]) -> tuple[dict, dict]:
    """The metrics of `rs` from a stubbed CloudWatch answering `values_by_query`, keyed by (the
    dimension value that names the row, metric name, statistic), and the one request sent."""
    session = AwsSession("us-east-1", environ=ENV)
    client = session.client("cloudwatch")
    sent: list[dict] = []
    client.meta.events.register("provide-client-params.cloudwatch.GetMetricData",
                                lambda params, **_: sent.append(params))
    source = SageMakerMetrics(session)
    # a dry run learns the query ids the source will send, then the stub answers them
    with Stubber(client) as stub:
        stub.add_response("get_metric_data", {"MetricDataResults": []})
        source.metrics(rs, NOW - timedelta(hours=3), NOW)
    queries = sent.pop()["MetricDataQueries"]
    values = {}
    for q in queries:
        stat = q["MetricStat"]
        key = (stat["Metric"]["Dimensions"][-1]["Value"], stat["Metric"]["MetricName"], stat["Stat"])
        if key in values_by_query:
            values[q["Id"]] = values_by_query[key]
    with Stubber(client) as stub:
        stub.add_response("get_metric_data", answer(values, [q["Id"] for q in queries]))
        data = source.metrics(rs, NOW - timedelta(hours=3), NOW)
        stub.assert_no_pending_responses()
    assert len(sent) == 1  # one call for the whole deployment
    return data, sent[0]


def test_lmi_metrics_come_from_each_inference_components_invocation_metrics() -> None:
    a1 = "demo-ep-api-1a2b3c4d-a1"
    data, request = fetch(deployment("lmi"), {
        (a1, "Invocations", "Sum"): 120, (a1, "Invocation4XXErrors", "Sum"): 2, (a1, "Invocation5XXErrors", "Sum"): 1,
        (a1, "ModelLatency", "p50"): 12_345.0, (a1, "ModelLatency", "p95"): 40_000.0, (a1, "ModelLatency", "p99"): 88_000.0,
        ("demo-ep-api-1a2b3c4d-base", "Invocations", "Sum"): 3})
    queries = request["MetricDataQueries"]
    assert len(queries) == 3 * 6  # two adapters and the base: three sums and three percentiles each
    metric = queries[0]["MetricStat"]
    assert metric["Metric"] == {"Namespace": "AWS/SageMaker", "MetricName": "Invocations",
                                "Dimensions": [{"Name": "InferenceComponentName", "Value": a1}]}
    assert {q["MetricStat"]["Stat"] for q in queries} == {"Sum", "p50", "p95", "p99"}
    # the window in whole minutes, one period covering it
    assert request["StartTime"] == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert request["EndTime"] == datetime(2026, 12, 1, 12, 1, tzinfo=UTC)
    assert {q["MetricStat"]["Period"] for q in queries} == {3 * 3600 + 60}
    rows = {r["adapter"]: r for r in data["adapters"]}
    assert list(rows) == ["a1", "a2", None]
    assert (rows["a1"]["invocations"], rows["a1"]["errors_4xx"], rows["a1"]["errors_5xx"]) == (120, 2, 1)
    assert rows["a1"]["latency_ms"] == {"p50": 12.345, "p95": 40.0, "p99": 88.0}  # microseconds to ms
    assert rows["a2"]["invocations"] == 0 and rows["a2"]["latency_ms"]["p50"] is None
    assert rows[None]["invocations"] == 3 and data["cache"] is None and data["endpoint"] is None


def test_serve_metrics_come_from_the_servers_emf_metrics_and_the_endpoints_own() -> None:
    ep = "demo-ep-api-1a2b3c4d"
    data, request = fetch(deployment("serve"), {
        ("a1", "Invocations", "Sum"): 50, ("a1", "Latency", "p99"): 31.5, ("a1", "AdapterCacheHits", "Sum"): 48,
        ("a1", "AdapterCacheMisses", "Sum"): 2, ("a1", "AdapterLoads", "Sum"): 2,
        ("a2", "AdapterCacheMisses", "Sum"): 1, ("AllTraffic", "Invocations", "Sum"): 51,
        ("AllTraffic", "ModelLatency", "p50"): 9_000.0})
    dims = {tuple((d["Name"], d["Value"]) for d in q["MetricStat"]["Metric"]["Dimensions"])
            for q in request["MetricDataQueries"]}
    assert (("EndpointName", ep), ("Adapter", "a1")) in dims and (("EndpointName", ep), ("Adapter", "__base__")) in dims
    assert (("EndpointName", ep), ("VariantName", "AllTraffic")) in dims
    namespaces = {q["MetricStat"]["Metric"]["Namespace"] for q in request["MetricDataQueries"]}
    assert namespaces == {"fastuner/serve", "AWS/SageMaker"}
    rows = {r["adapter"]: r for r in data["adapters"]}
    assert list(rows) == ["a1", "a2"]  # the base model and unknown names only when they were invoked
    assert rows["a1"]["cache"] == {"hits": 48, "misses": 2, "loads": 2} and rows["a1"]["latency_ms"]["p99"] == 31.5
    assert data["cache"] == {"hits": 48, "misses": 3, "loads": 2}
    assert data["endpoint"]["invocations"] == 51 and data["endpoint"]["latency_ms"]["p50"] == 9.0


def test_a_serve_endpoint_without_per_adapter_metrics_says_what_to_set() -> None:
    data, _ = fetch(deployment("serve"), {("AllTraffic", "Invocations", "Sum"): 10})
    assert any("FASTUNER_ENDPOINT_NAME" in n for n in data["notes"])


def test_older_windows_take_coarser_periods() -> None:
    assert window(NOW - timedelta(minutes=5), NOW)[2] == 360
    assert window(NOW - timedelta(days=20), NOW)[2] % 300 == 0
    assert window(NOW - timedelta(days=70), NOW)[2] % 3600 == 0


def test_cloudwatch_refusing_is_a_provider_error_naming_the_action() -> None:
    from fastuner.providers.base import ProviderError

    session = AwsSession("us-east-1", environ=ENV)
    with Stubber(session.client("cloudwatch")) as stub:
        stub.add_client_error("get_metric_data", "AccessDenied", "User is not authorized to perform: "
                              "cloudwatch:GetMetricData", 403)
        with pytest.raises(ProviderError) as caught:
            SageMakerMetrics(session).metrics(deployment("lmi"), NOW - timedelta(hours=1), NOW)
    assert "cloudwatch:GetMetricData" in str(caught.value)


def test_a_provider_without_metrics_says_so() -> None:
    from fastuner.providers.base import Provider, ProviderError

    with pytest.raises(ProviderError, match="the sagemaker provider cannot read a deployment's metrics"):
        Provider(name="sagemaker", resources={}).metrics_source()
