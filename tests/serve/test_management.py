"""LRU eviction order and counters; adding, replacing and deleting adapters without a restart.

Runs on the shared classification server (cache size 2): counters are compared as differences.
"""

from __future__ import annotations

import pytest

from tests.serve.factory import make_adapter

pytestmark = pytest.mark.slow  # starts the inference server as a process

LABELS = ["no", "yes"]
TEXT = "how do I reset my password"


def test_lru_eviction_and_runtime_management(cls_server, models, reference, tmp_path):
    server = cls_server
    pid = server.proc.pid
    start_time = server.metrics()[("process_start_time_seconds", frozenset())]
    for i, name in enumerate(("a", "b", "c", "d")):
        make_adapter(models["bert-cls"], tmp_path / name, task="classification", labels=LABELS, seed=10 + i)
    for name in ("m-a", "m-b", "m-c"):
        status, added = server.request("POST", f"/adapters/{name}", {"path": str(tmp_path / name[-1])})
        assert status == 201 and added["replaced"] is False and added["loaded"] is False

    def call(name: str) -> dict:
        status, out = server.invoke({"inputs": TEXT, "adapter": name})
        assert status == 200, out
        return out

    def loaded() -> list[str]:
        return server.request("GET", "/adapters")[1]["cache"]["loaded"]

    def counters() -> tuple[float, ...]:
        m = server.metrics()
        names = [f"fastuner_adapter_cache_{k}_total" for k in ("hits", "misses", "evictions")]
        return tuple(m[(name, frozenset())] for name in [*names, "fastuner_adapter_load_seconds_count"])

    call("m-a")
    call("m-b")
    assert loaded() == ["m-a", "m-b"]
    before = counters()
    call("m-a")  # hit; m-b is now least recently used
    call("m-c")  # miss, evicts m-b
    assert loaded() == ["m-a", "m-c"]
    call("m-b")  # miss, evicts m-a
    assert loaded() == ["m-c", "m-b"]
    assert diff(counters(), before) == (1, 2, 2, 2)  # hits, misses, evictions, loads

    # each adapter serves its own weights
    for name in ("m-a", "m-c"):
        assert_close(call(name), reference.classify(tmp_path / name[-1], TEXT, LABELS))

    # replace a loaded adapter: the cached copy is evicted, the next call serves the new files
    assert loaded() == ["m-a", "m-c"]
    before = counters()
    status, replaced = server.request("POST", "/adapters/m-c", {"path": str(tmp_path / "d")})
    assert status == 200 and replaced["replaced"] is True and replaced["loaded"] is False
    assert loaded() == ["m-a"]
    assert diff(counters(), before) == (0, 0, 1, 0)
    assert_close(call("m-c"), reference.classify(tmp_path / "d", TEXT, LABELS))
    assert server.request("GET", "/adapters/m-c")[1]["location"] == str(tmp_path / "d")

    # delete
    status, deleted = server.request("DELETE", "/adapters/m-a")
    assert status == 200 and deleted == {"name": "m-a", "deleted": True, "evicted": True}
    status, error = server.invoke({"inputs": TEXT, "adapter": "m-a"})
    assert (status, error["code"]) == (404, "unknown_adapter")
    assert server.request("DELETE", "/adapters/m-a")[0] == 404
    assert server.request("GET", "/adapters/m-a")[0] == 404
    names = {a["name"] for a in server.request("GET", "/adapters")[1]["adapters"]}
    assert {"m-b", "m-c"} <= names and "m-a" not in names

    assert server.proc.pid == pid and server.proc.poll() is None  # nothing restarted
    assert server.metrics()[("process_start_time_seconds", frozenset())] == start_time
    for name in ("m-b", "m-c"):
        assert server.request("DELETE", f"/adapters/{name}")[0] == 200


def diff(after: tuple[float, ...], before: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(a - b for a, b in zip(after, before, strict=True))


def assert_close(got: dict, want: dict[str, float]) -> None:
    assert list(got["scores"]) == list(want)
    assert all(abs(got["scores"][k] - v) < 1e-5 for k, v in want.items()), (got, want)
