"""The invoke client against a real (tiny, in-process) HTTP server: retries and backoff, batching,
input order, error rows, splitting a refused batch, and stopping on errors that doom every request."""

from __future__ import annotations

import json
import random

import pytest

from fastuner.providers.endpoint import InvokeError, Row, read_rows, run_rows
from fastuner.providers.local.client import Client
from tests.invoke.fakeserver import FakeServer, Script, closed_port_url


def client(url: str, sleeps: list[float] | None = None, **kw) -> Client:
    record = sleeps if sleeps is not None else []
    return Client(url, sleep=record.append, rng=random.Random(0), **kw)


def rows_of(*texts: str) -> list[Row]:
    return [Row(i + 1, {"input": t, "id": i}) for i, t in enumerate(texts)]


def test_one_input_one_answer(server: FakeServer, script: Script) -> None:
    answer = client(server.url).invoke("a good day", "a1")
    assert answer["label"] == "pos" and set(answer["scores"]) == {"neg", "pos"}
    assert script.requests == [{"inputs": "a good day", "adapter": "a1"}]


def test_5xx_is_retried_with_exponential_backoff(server: FakeServer, script: Script) -> None:
    script.fail_next = [503, 500, "drop"]
    sleeps: list[float] = []
    c = client(server.url, sleeps, retries=3, backoff=0.5)
    assert c.invoke("good", "a1")["label"] == "pos"
    assert c.requests == 4 and len(script.requests) == 4
    # each delay is the doubled base times a jitter in [0.5, 1]
    for attempt, delay in enumerate(sleeps):
        assert 0.5 * 2 ** attempt * 0.5 <= delay <= 0.5 * 2 ** attempt
    assert len(sleeps) == 3


def test_retries_run_out(server: FakeServer, script: Script) -> None:
    script.fail_next = [503] * 5
    sleeps: list[float] = []
    with pytest.raises(InvokeError) as err:
        client(server.url, sleeps, retries=2).invoke("x", "a1")
    assert err.value.status == 503 and len(script.requests) == 3 and len(sleeps) == 2


def test_4xx_is_never_retried(server: FakeServer, script: Script) -> None:
    sleeps: list[float] = []
    with pytest.raises(InvokeError) as err:
        client(server.url, sleeps).invoke("x", "nope")
    assert (err.value.status, err.value.code) == (404, "unknown_adapter")
    assert "not registered" in err.value.message
    assert len(script.requests) == 1 and sleeps == []


def test_connection_refused_is_retried_then_reported() -> None:
    sleeps: list[float] = []
    c = client(closed_port_url(), sleeps, retries=2)
    with pytest.raises(InvokeError) as err:
        c.invoke("x", "a1")
    assert err.value.status is None and err.value.code == "connection_failed" and err.value.fatal
    assert "refused" in err.value.message.lower()
    assert c.requests == 3 and len(sleeps) == 2


def test_a_timeout_is_retried(server: FakeServer, script: Script) -> None:
    sleeps: list[float] = []
    with pytest.raises(InvokeError) as err:
        client(server.url, sleeps, retries=1, timeout=0.2).invoke("SLOW 0.6", "a1")
    assert err.value.code == "connection_failed" and "timed out" in err.value.message
    assert len(script.requests) == 2 and len(sleeps) == 1


def test_rows_are_batched_and_answered_in_input_order(server: FakeServer, script: Script) -> None:
    # the first request is held until every other row is answered: it finishes last, yet comes out first
    texts = ["WAIT good", *[f"row {i} {'good' if i % 3 == 0 else 'bad'}" for i in range(1, 20)]]
    done: list[tuple[int, int]] = []

    def on_done(ok: int, failed: int) -> None:
        done.append((ok, failed))
        if sum(o for o, _ in done) == 17:
            script.release.set()

    out = list(run_rows(client(server.url), rows_of(*texts), adapter="a1", concurrency=4, rows_per_request=3,
                        on_done=on_done))
    assert [line["id"] for line in out] == list(range(20))
    assert [line["input"] for line in out] == texts
    assert [line["output"]["label"] for line in out] == ["pos" if "good" in t else "neg" for t in texts]
    assert sorted(len(r["inputs"]) for r in script.requests) == [2, 3, 3, 3, 3, 3, 3]
    assert script.finished[-1][0] == texts[0]  # completion order differed from input order
    assert sum(ok for ok, _ in done) == 20 and sum(f for _, f in done) == 0


def test_one_row_per_request_sends_a_string(server: FakeServer, script: Script) -> None:
    out = list(run_rows(client(server.url), rows_of("good", "bad"), adapter="a1", rows_per_request=1))
    assert sorted(r["inputs"] for r in script.requests) == ["bad", "good"]
    assert [line["output"]["label"] for line in out] == ["pos", "neg"]


def test_a_refused_row_fails_alone(server: FakeServer, script: Script) -> None:
    texts = ["good", "EMPTY", "bad", "good again"]
    out = list(run_rows(client(server.url), rows_of(*texts), adapter="a1", rows_per_request=4))
    assert [("error" in line) for line in out] == [False, True, False, False]
    bad = out[1]
    assert bad["row"] == 2 and bad["code"] == "empty_input" and bad["status"] == 400
    assert bad["input"] == "EMPTY" and bad["id"] == 1  # the row's own fields come along
    assert len(script.requests) == 1 + 4  # the list, then each row alone


def test_bad_lines_become_error_rows_without_a_request(server: FakeServer, script: Script) -> None:
    lines = ['{"input": "good"}', "", "not json", '{"text": "no input field"}', "[1, 2]", '{"input": "bad"}']
    rows = read_rows(lines)
    assert [r.number for r in rows] == [1, 3, 4, 5, 6]  # blank lines are skipped, numbers stay line numbers
    out = list(run_rows(client(server.url), rows, adapter="a1"))
    assert [line.get("row") for line in out] == [None, 3, 4, 5, None]
    assert "not JSON" in out[1]["error"] and "'input'" in out[2]["error"] and out[2]["text"] == "no input field"
    assert out[3]["code"] == "bad_row"
    assert sorted(r["inputs"] for r in script.requests) == ["bad", "good"]  # a lone row is sent as a string


def test_an_unknown_adapter_stops_the_batch(server: FakeServer, script: Script) -> None:
    out = list(run_rows(client(server.url), rows_of(*[f"r{i}" for i in range(10)]), adapter="nope",
                        concurrency=1, rows_per_request=2))
    assert len(out) == 10 and all(line["code"] == "unknown_adapter" for line in out)
    assert out[-1]["error"].startswith("not sent: ")
    assert len(script.requests) == 1


def test_server_errors_become_rows_after_retries(server: FakeServer, script: Script) -> None:
    script.fail_next = [500, 500]  # the first request fails twice: with retries=1 it gives up
    out = list(run_rows(client(server.url, retries=1), rows_of("a", "b", "c"), adapter="a1", concurrency=1,
                        rows_per_request=1))
    assert out[0]["code"] == "internal_error" and out[0]["status"] == 500 and out[0]["row"] == 1
    assert [("output" in line) for line in out] == [False, True, True]
    json.dumps(out)  # every line is JSON-serialisable


def test_closing_the_stream_stops_sending_and_retrying(server: FakeServer, script: Script) -> None:
    """Ctrl-C while writing a batch: what is in flight finishes, nothing new is sent."""
    c = client(server.url)
    lines = run_rows(c, rows_of("good", "WAIT", *[f"r{i}" for i in range(8)]), adapter="a1", concurrency=1,
                     rows_per_request=1)
    assert next(lines)["output"]["label"] == "pos"
    script.release.set()
    lines.close()
    assert c.cancel.is_set() and len(script.requests) < 10
    with pytest.raises(InvokeError) as err:
        c.invoke("good", "a1")
    assert err.value.code == "interrupted"
