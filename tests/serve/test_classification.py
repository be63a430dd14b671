"""Classification over HTTP: outputs equal PeftModel in-process, heads of 3 and 5 labels side by side."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from tests.serve.factory import make_adapter
from tests.serve.harness import histogram_quantile, wait_until
from tests.serve.helpers import LABELS3, LABELS5, TEXTS

pytestmark = pytest.mark.slow  # starts the inference server as a process

BASE_LABELS = ["base-a", "base-b", "base-c"]


def assert_scores(got: dict, want: dict[str, float]) -> None:
    assert list(got["scores"]) == list(want)
    for label, p in want.items():
        assert abs(got["scores"][label] - p) < 1e-5, (label, got["scores"][label], p)
    assert got["label"] == max(want, key=want.get)


def test_ping(cls_server):
    assert cls_server.request("GET", "/ping") == (200, {"status": "healthy"})


def test_adapters_equal_peft_in_process_and_differ_from_base(cls_server, reference):
    for text in TEXTS[:2]:
        status, base = cls_server.invoke({"inputs": text})
        assert status == 200
        assert_scores(base, reference.classify(None, text, BASE_LABELS))
        status, c3 = cls_server.invoke({"inputs": text, "adapter": "c3"})
        assert status == 200
        assert_scores(c3, reference.classify("c3", text, LABELS3))
        assert list(c3["scores"].values()) != list(base["scores"].values())


def test_three_and_five_label_adapters_side_by_side(cls_server, reference):
    for _ in range(2):  # alternate, so each runs while the other is loaded in the same model
        for adapter, labels in (("c5", LABELS5), ("c3", LABELS3)):
            status, out = cls_server.invoke({"inputs": TEXTS[0], "adapter": adapter})
            assert status == 200
            assert_scores(out, reference.classify(adapter, TEXTS[0], labels))
    status, listing = cls_server.request("GET", "/adapters")
    labels = {a["name"]: len(a["labels"]) for a in listing["adapters"] if a["name"] in ("c3", "c5")}
    assert labels == {"c3": 3, "c5": 5}
    assert set(listing["cache"]["loaded"]) == {"c3", "c5"}


def test_batch_request_returns_a_list_in_order(cls_server, reference):
    status, outs = cls_server.invoke({"inputs": TEXTS, "adapter": "c5"})
    assert status == 200 and len(outs) == len(TEXTS)
    for text, out in zip(TEXTS, outs, strict=True):
        assert_scores(out, reference.classify("c5", text, LABELS5))
    status, one = cls_server.invoke({"inputs": [TEXTS[1]]})
    assert status == 200 and isinstance(one, list) and len(one) == 1


def test_concurrent_requests_on_different_adapters_get_their_own_answers(cls_server, reference):
    jobs = [(adapter, text) for text in TEXTS for adapter in (None, "c3", "c5")] * 2
    results: dict[int, tuple[int, dict]] = {}

    def call(i: int, adapter: str | None, text: str) -> None:
        results[i] = cls_server.invoke({"inputs": text, "adapter": adapter})

    threads = [threading.Thread(target=call, args=(i, *job)) for i, job in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    labels = {None: BASE_LABELS, "c3": LABELS3, "c5": LABELS5}
    for i, (adapter, text) in enumerate(jobs):
        status, out = results[i]
        assert status == 200
        assert_scores(out, reference.classify(adapter, text, labels[adapter]))


def test_header_forms_select_the_adapter(cls_server, reference):
    want = reference.classify("c5", TEXTS[2], LABELS5)
    for headers in ({"X-Amzn-SageMaker-Inference-Component": "c5"},
                    {"X-Amzn-SageMaker-Custom-Attributes": "adapter=c5"},
                    {"X-Amzn-SageMaker-Custom-Attributes": "trace=1; adapter=c5"}):
        status, out = cls_server.invoke({"inputs": TEXTS[2]}, headers)
        assert status == 200, headers
        assert_scores(out, want)
    status, out = cls_server.invoke({"inputs": TEXTS[2], "adapter": "c5"},
                                    {"X-Amzn-SageMaker-Inference-Component": "c5"})
    assert status == 200
    status, error = cls_server.invoke({"inputs": TEXTS[2], "adapter": "c3"},
                                      {"X-Amzn-SageMaker-Custom-Attributes": "adapter=c5"})
    assert status == 400 and "'c3'" in error["error"] and "'c5'" in error["error"]


def test_client_errors_are_4xx_json(cls_server):
    cases = [
        (b"{not json", 400, "bad_request", "not valid JSON"),
        (b"[1, 2]", 400, "bad_request", "JSON object"),
        (json.dumps({"input": "x"}).encode(), 400, "bad_request", "did you mean 'inputs'"),
        (json.dumps({"inputs": []}).encode(), 400, "bad_request", "non-empty list"),
        (json.dumps({"inputs": [1]}).encode(), 400, "bad_request", "strings"),
        (json.dumps({"inputs": "x", "adapter": 3}).encode(), 400, "bad_request", "'adapter' must be"),
        (json.dumps({"inputs": "x", "adapter": "nope"}).encode(), 404, "unknown_adapter", "'nope'"),
        (json.dumps({"inputs": "x", "max_new_tokens": 5}).encode(), 400, "bad_request", "generation"),
        (json.dumps({"inputs": " ".join(["fox"] * 200)}).encode(), 422, "input_too_long",
         "202 tokens; the model's limit is 128"),
        (json.dumps({"inputs": ["ok", " ".join(["fox"] * 200)]}).encode(), 422, "input_too_long", "inputs[1]"),
    ]
    for body, status, code, text in cases:
        got_status, error = cls_server.invoke(body)
        assert (got_status, error["code"]) == (status, code), (body, error)
        assert text in error["error"], (text, error)
    assert cls_server.request("GET", "/invocations")[0] == 405
    assert cls_server.request("GET", "/nope")[0] == 404
    assert cls_server.request("GET", "/ping")[0] == 200  # still serving


def test_inputs_the_dataset_rules_refuse_are_refused(cls_server, models, tmp_path):
    """Empty or whitespace-only input, and input longer than the adapter's dataset allowed (its
    fastuner.json `max_input_chars`, counted after NFC and strip as the dataset scan counts)."""
    short = shutil.copytree(models["c3"], tmp_path / "short")
    meta = json.loads((short / "fastuner.json").read_text())
    (short / "fastuner.json").write_text(json.dumps({**meta, "max_input_chars": 10}))
    assert cls_server.request("POST", "/adapters/short", {"path": str(short)})[0] == 201
    assert cls_server.request("GET", "/adapters/short")[1]["max_input_chars"] == 10
    try:
        cases = [
            ({"inputs": ""}, 400, "empty_input", "the input is empty or only whitespace"),
            ({"inputs": " \t\n "}, 400, "empty_input", "the input is empty or only whitespace"),
            ({"inputs": ["ok", "   "], "adapter": "c3"}, 400, "empty_input", "inputs[1] is empty or only whitespace"),
            ({"inputs": "eleven char", "adapter": "short"}, 422, "input_too_long",
             "the input is 11 characters; adapter 'short' accepts at most 10 (the max_input_chars of the dataset"),
            ({"inputs": ["ok", "0123456789!"], "adapter": "short"}, 422, "input_too_long", "inputs[1] is 11 characters"),
        ]
        for body, status, code, text in cases:
            got_status, error = cls_server.invoke(body)
            assert (got_status, error["code"]) == (status, code), (body, error)
            assert text in error["error"], (text, error)
        # ten characters after NFC (e + combining acute is one character) and strip: accepted
        status, answer = cls_server.invoke({"inputs": "  cafe\u0301 12345 \n", "adapter": "short"})
        assert status == 200 and answer["label"] in LABELS3
        # an adapter without the limit (trained before it was recorded) takes long inputs as before
        assert cls_server.invoke({"inputs": "eleven char", "adapter": "c3"})[0] == 200
    finally:
        assert cls_server.request("DELETE", "/adapters/short")[0] == 200


def test_registering_an_incompatible_adapter_is_refused(cls_server, models, tmp_path):
    gen = cls_server.request("POST", "/adapters/gen", {"path": str(models["g_chat"])})
    assert gen[0] == 409 and gen[1]["code"] == "adapter_task_mismatch"
    other_base = make_adapter(models["bert"], tmp_path / "other", task="classification", labels=LABELS3)
    status, error = cls_server.request("POST", "/adapters/other", {"path": str(other_base)})
    assert (status, error["code"]) == (409, "adapter_base_mismatch")
    assert str(models["bert"]) in error["error"] and "--base-model-id" in error["error"]
    wrong_tok = shutil.copytree(models["c3"], tmp_path / "wrong-tok")
    meta = json.loads((wrong_tok / "fastuner.json").read_text())
    (wrong_tok / "fastuner.json").write_text(json.dumps({**meta, "tokenizer_hash": "sha256:0"}))
    status, error = cls_server.request("POST", "/adapters/wrong-tok", {"path": str(wrong_tok)})
    assert (status, error["code"]) == (409, "adapter_base_mismatch") and "tokenizer" in error["error"]
    corrupt = shutil.copytree(models["c3"], tmp_path / "corrupt")
    weights = corrupt / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    status, error = cls_server.request("POST", "/adapters/corrupt", {"path": str(corrupt)})
    assert (status, error["code"]) == (422, "adapter_invalid") and "truncated" in error["error"]
    status, error = cls_server.request("POST", "/adapters/missing", {"path": str(tmp_path / "absent")})
    assert (status, error["code"]) == (422, "adapter_invalid") and "does not exist" in error["error"]
    assert cls_server.request("POST", "/adapters/x", {"where": "y"})[0] == 400
    assert cls_server.request("POST", "/adapters/_bad", {"path": "y"})[0] == 400
    names = {a["name"] for a in cls_server.request("GET", "/adapters")[1]["adapters"]}
    assert not names & {"gen", "other", "wrong-tok", "corrupt", "missing", "x"}


def test_metrics_count_requests_and_latency_and_move_the_last_invocation(cls_server):
    before = cls_server.metrics()
    stamp = before[("fastuner_last_invocation_timestamp_seconds", frozenset())]
    assert cls_server.invoke({"inputs": "x", "adapter": "c3"})[0] == 200
    assert cls_server.invoke({"inputs": "x", "adapter": "nope"})[0] == 404
    after = cls_server.metrics()
    key = ("fastuner_requests_total", frozenset({("adapter", "c3"), ("status", "200")}))
    assert after[key] == before.get(key, 0) + 1
    assert after[("fastuner_requests_total", frozenset({("adapter", "__unknown__"), ("status", "404")}))] >= 1
    assert after[("fastuner_last_invocation_timestamp_seconds", frozenset())] > stamp
    assert after[("process_start_time_seconds", frozenset())] <= stamp or stamp == 0
    count = after[("fastuner_request_duration_seconds_count", frozenset({("adapter", "c3")}))]
    inf = after[("fastuner_request_duration_seconds_bucket", frozenset({("adapter", "c3"), ("le", "+Inf")}))]
    every_c3 = sum(v for (name, labels), v in after.items()
                   if name == "fastuner_requests_total" and ("adapter", "c3") in labels)
    assert count == inf == every_c3  # every request to c3 is timed, whatever its status (other tests send 4xx)
    p50 = histogram_quantile(after, "fastuner_request_duration_seconds", {"adapter": "c3"}, 0.5)
    p95 = histogram_quantile(after, "fastuner_request_duration_seconds", {"adapter": "c3"}, 0.95)
    assert 0 < p50 <= p95 < float("inf")
    # the gauge drops just after the answer is written (a draining server waits on it before it exits),
    # so a client can ask faster than the handler's last line runs
    wait_until(lambda: cls_server.metrics()[("fastuner_inflight_requests", frozenset())] == 0, timeout=10)
    for name in ("fastuner_adapter_cache_hits_total", "fastuner_adapter_cache_misses_total",
                 "fastuner_adapter_cache_evictions_total", "fastuner_adapter_load_seconds_count",
                 "fastuner_adapters_loaded", "fastuner_adapters_registered"):
        assert (name, frozenset()) in after, name
