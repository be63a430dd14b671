"""Per-request metrics for CloudWatch (Embedded Metric Format on stdout, for SageMaker): the line's shape
as CloudWatch's EMF specification requires it, the setting that turns it on, and the lines a real server
writes for a miss that loads an adapter, a hit, the base model and an unknown adapter."""

from __future__ import annotations

import io
import json

import pytest
from fastuner_serve import emf
from fastuner_serve.settings import load_settings

from tests.serve.harness import read_line
from tests.serve.helpers import start

# CloudWatch's units (PutMetricData / EMF)
UNITS = {"Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes", "Terabytes",
         "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count", "Bytes/Second",
         "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second", "Terabytes/Second", "Bits/Second",
         "Kilobits/Second", "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None"}


def check_emf(record: dict) -> None:
    """The specification's rules: a root `_aws` with an integer millisecond Timestamp and CloudWatchMetrics
    directives; each directive a Namespace, Dimensions (lists of at most 30 names, each a string member
    of the root) and Metrics (at most 100, each a numeric member of the root, with a known unit)."""
    meta = record["_aws"]
    assert isinstance(meta["Timestamp"], int) and meta["Timestamp"] > 1_600_000_000_000
    for directive in meta["CloudWatchMetrics"]:
        assert isinstance(directive["Namespace"], str) and 0 < len(directive["Namespace"]) <= 255
        for dimension_set in directive["Dimensions"]:
            assert 0 < len(dimension_set) <= 30
            for name in dimension_set:
                assert isinstance(record[name], str) and record[name]
        assert 0 < len(directive["Metrics"]) <= 100
        for metric in directive["Metrics"]:
            assert isinstance(record[metric["Name"]], int | float) and not isinstance(record[metric["Name"]], bool)
            assert metric["Unit"] in UNITS


def test_one_line_per_request_in_cloudwatchs_embedded_metric_format() -> None:
    record = emf.invocation_record("demo-ep-api-1a2b", "c3", 200, 0.0123, cache="miss", load_seconds=0.02,
                                   now=1_764_590_400.5)
    check_emf(record)
    assert record["_aws"]["Timestamp"] == 1_764_590_400_500
    directive = record["_aws"]["CloudWatchMetrics"][0]
    assert directive["Namespace"] == "fastuner/serve" and directive["Dimensions"] == [["EndpointName", "Adapter"]]
    assert (record["EndpointName"], record["Adapter"], record["Status"]) == ("demo-ep-api-1a2b", "c3", 200)
    assert {k: record[k] for k in ("Invocations", "Invocation4XXErrors", "Invocation5XXErrors", "Latency",
                                   "AdapterCacheHits", "AdapterCacheMisses", "AdapterLoads", "AdapterLoadTime")} == {
        "Invocations": 1, "Invocation4XXErrors": 0, "Invocation5XXErrors": 0, "Latency": 12.3,
        "AdapterCacheHits": 0, "AdapterCacheMisses": 1, "AdapterLoads": 1, "AdapterLoadTime": 20.0}
    base = emf.invocation_record("ep", None, 503, 0.001, now=1_764_590_400)
    check_emf(base)
    assert base["Adapter"] == "__base__" and base["Invocation5XXErrors"] == 1
    assert "AdapterCacheHits" not in base  # no adapter, no cache lookup: no value rather than a zero
    out = io.StringIO()
    emf.write(base, out)
    assert out.getvalue().count("\n") == 1 and json.loads(out.getvalue()) == base


def test_the_endpoint_name_turns_it_on(tmp_path) -> None:
    args = ["--base-model", str(tmp_path)]
    assert load_settings(args, env={}).emf_endpoint is None  # a local server keeps stdout for its first line
    assert load_settings(args, env={"FASTUNER_ENDPOINT_NAME": "ep-1"}).emf_endpoint == "ep-1"
    assert load_settings([*args, "--emf-endpoint", "ep-2"], env={"FASTUNER_ENDPOINT_NAME": "ep-1"}).emf_endpoint == "ep-2"


@pytest.mark.slow  # starts the inference server as a process
def test_a_server_on_sagemaker_writes_a_line_per_request(models, tmp_path) -> None:
    server = start(["--base-model", str(models["bert-cls"]), "--adapter", f"c3={models['c3']}", "--cache-size", "1"],
                   tmp_path, "emf", env={"FASTUNER_ENDPOINT_NAME": "demo-ep-api-1a2b"})
    try:
        for body in ({"inputs": "refund please", "adapter": "c3"}, {"inputs": ["a", "b"], "adapter": "c3"},
                     {"inputs": "no adapter"}, {"inputs": "x", "adapter": "nope"}):
            server.invoke(body)
        lines = [json.loads(read_line(server.proc, 30)) for _ in range(4)]
    finally:
        assert server.stop() == 0, server.stderr()
    for line in lines:
        check_emf(line)
    assert [(r["Adapter"], r["Status"]) for r in lines] == [("c3", 200), ("c3", 200), ("__base__", 200),
                                                             ("__unknown__", 404)]
    miss, hit, base, unknown = lines
    assert (miss["AdapterCacheMisses"], miss["AdapterLoads"], miss["AdapterLoadTime"] > 0) == (1, 1, True)
    assert (hit["AdapterCacheHits"], hit["AdapterCacheMisses"], "AdapterLoads" in hit) == (1, 0, False)
    assert "AdapterCacheHits" not in base and unknown["Invocation4XXErrors"] == 1
    assert all(r["EndpointName"] == "demo-ep-api-1a2b" and r["Latency"] > 0 for r in lines)
