"""Pure parts, in-process: settings precedence, artifact refusals, LRU slots, request parsing."""

from __future__ import annotations

import json
import shutil

import pytest
from fastuner_serve.adapters import SlotCache
from fastuner_serve.artifact import ArtifactError, read_artifact
from fastuner_serve.errors import ApiError, StartupError
from fastuner_serve.protocol import parse_invocation
from fastuner_serve.settings import load_settings

from tests.serve.factory import make_adapter


def test_settings_precedence_config_then_env_then_flags(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "serve.json").write_text(json.dumps({
        "base_model": "org/model", "cache_size": 3, "port": 9000,
        "adapters": {"a": "a", "b": "s3://bucket/b/"},
    }))
    env = {"FASTUNER_ADAPTERS": json.dumps({"b": "/env/b", "c": "/env/c"}), "SM_MODEL_DIR": str(tmp_path / "none")}
    settings = load_settings(["--config", str(tmp_path / "serve.json"), "--cache-size", "5",
                              "--adapter", "c=/flag/c"], env)
    assert settings.base_model == "org/model" and settings.cache_size == 5 and settings.port == 9000
    assert settings.adapters == {"a": str(tmp_path / "a"), "b": "/env/b", "c": "/flag/c"}
    assert settings.host == "127.0.0.1"
    assert load_settings(["serve", "--base-model", "m"], {"SM_MODEL_DIR": "/nowhere"}).host == "0.0.0.0"
    assert load_settings(["--base-model", "m"], {"SAGEMAKER_BIND_TO_PORT": "9123"}).port == 9123


def test_settings_discover_the_sagemaker_model_dir(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text("{}")
    for name in ("x", "y"):
        (tmp_path / "adapters" / name).mkdir(parents=True)
        (tmp_path / "adapters" / name / "fastuner.json").write_text("{}")
    settings = load_settings(["serve"], {"SM_MODEL_DIR": str(tmp_path)})
    assert settings.base_model == str(tmp_path / "base")
    assert settings.adapters == {"x": str(tmp_path / "adapters" / "x"), "y": str(tmp_path / "adapters" / "y")}
    single = tmp_path / "single"
    single.mkdir()
    (single / "fastuner.json").write_text(json.dumps({"base_model": "org/base"}))
    settings = load_settings(["serve"], {"SM_MODEL_DIR": str(single)})
    assert (settings.base_model, settings.adapters) == ("org/base", {"default": str(single)})
    with pytest.raises(StartupError, match="no base model"):
        load_settings([], {"SM_MODEL_DIR": str(tmp_path / "empty")})
    with pytest.raises(StartupError, match="invalid adapter name"):
        load_settings(["--base-model", "m", "--adapter", "../x=/y"], {"SM_MODEL_DIR": "/nowhere"})


def test_artifacts_this_server_would_serve_wrong_are_refused(models, tmp_path):
    ok = read_artifact(models["c5"])
    assert ok.labels is not None and len(ok.labels) == 5
    assert {t.module.rsplit(".", 1)[1] for t in ok.targets} == {"query", "value"}
    assert ok.targets[0].rank == 8 and ok.targets[0].scaling == 1.0
    dora = make_adapter(models["bert-cls"], tmp_path / "dora", task="classification", labels=["a", "b", "c"])
    config = json.loads((dora / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**config, "use_dora": True}))
    with pytest.raises(ArtifactError, match="use_dora=True is not supported"):
        read_artifact(dora)
    few_labels = shutil.copytree(models["c3"], tmp_path / "few")
    meta = json.loads((few_labels / "fastuner.json").read_text())
    (few_labels / "fastuner.json").write_text(json.dumps({**meta, "labels": ["a", "b"]}))
    with pytest.raises(ArtifactError, match="no saved classification head with 2 outputs"):
        read_artifact(few_labels)
    no_meta = shutil.copytree(models["c3"], tmp_path / "no-meta")
    (no_meta / "fastuner.json").unlink()
    with pytest.raises(ArtifactError, match=r"fastuner\.json is missing"):
        read_artifact(no_meta)


def test_slot_cache_is_lru_and_respects_pinned_slots():
    cache = SlotCache(2)
    assert cache.admit(("a", 1), set()) == (1, None)
    assert cache.admit(("b", 1), set()) == (2, None)
    assert cache.lookup(("a", 1)) == 1  # a is now the most recent
    assert cache.admit(("c", 1), set()) == (2, ("b", 1))
    assert cache.admit(("d", 1), pinned={1}) == (2, ("c", 1))  # a is pinned by the batch
    assert cache.keys() == [("a", 1), ("d", 1)]
    assert cache.drop(("a", 1)) == 1 and cache.admit(("e", 1), set()) == (1, None)


def test_adapter_selection_and_body_parsing():
    def parse(body, headers=None):
        return parse_invocation(json.dumps(body).encode(), headers or {}, max_inputs=4, max_new_tokens_limit=100)

    assert parse({"inputs": "x"}).adapter is None
    attrs = "X-Amzn-SageMaker-Custom-Attributes"
    assert parse({"inputs": "x"}, {attrs: "a=1,adapter=z ; b=2"}).adapter == "z"
    assert parse({"inputs": "x", "adapter": "z"}, {"X-Amzn-SageMaker-Inference-Component": "z"}).adapter == "z"
    call = parse({"inputs": ["x", "y"], "parameters": {"max_new_tokens": 7, "stop": "\n"}, "temperature": 0.5})
    assert call.batched and call.params.max_new_tokens == 7 and call.params.stop == ("\n",)
    assert call.params.temperature == 0.5 and set(call.generation_keys) == {"max_new_tokens", "stop", "temperature"}
    for body, status in (({"inputs": ["x"] * 5}, 413), ({"inputs": "x", "max_new_tokens": 101}, 400),
                         ({"inputs": "x", "max_new_tokens": True}, 400), ({"inputs": "x", "parameters": []}, 400)):
        with pytest.raises(ApiError) as error:
            parse(body)
        assert error.value.status == status, body


def test_what_http_server_refuses_is_a_json_4xx():
    """Found by the fuzzer (tests/stress/serverfuzz.py): an unknown method got http.server's HTML 501 page,
    a malformed request line its HTML 400."""
    import socket
    import threading

    from fastuner_serve.api import Handler, Server

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for request, status, code in ((b"PATCH /invocations HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method_not_allowed"),
                                      (b"FOO BAR BAZ QUX\r\n\r\n", 400, "bad_request"),
                                      (b"GET /ping HTTP/2.0\r\n\r\n", 400, "bad_request")):
            with socket.create_connection(server.server_address[:2], timeout=10) as sock:
                sock.sendall(request)
                head, _, body = b"".join(iter(lambda: sock.recv(65536), b"")).partition(b"\r\n\r\n")
            assert head.split(b" ", 2)[1] == str(status).encode(), head
            assert b"Content-Type: application/json" in head
            assert json.loads(body)["code"] == code
    finally:
        server.shutdown()
        server.server_close()


def test_a_negative_or_odd_content_length_is_a_400():
    """Found by the fuzzer: Content-Length -10 was a 500 (read(-10)), -1 read until the client hung up."""
    import socket
    import threading
    from types import SimpleNamespace

    from fastuner_serve.api import Handler, Server

    server = Server(("127.0.0.1", 0), Handler)
    server.app = SimpleNamespace(settings=SimpleNamespace(max_body_bytes=1000, host="127.0.0.1", management_token=None),
                                 shutting_down=threading.Event())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for value in ("-10", "-1", "+5", "1_0", "x"):
            with socket.create_connection(server.server_address[:2], timeout=10) as sock:
                sock.sendall(f"PUT /adapters/a HTTP/1.1\r\nContent-Length: {value}\r\n\r\n{{}}".encode())
                head, _, body = b"".join(iter(lambda: sock.recv(65536), b"")).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400 "), (value, head)
            assert json.loads(body)["error"] == "Content-Length is not a number of bytes"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("host", "token", "sent", "status"), [
    ("127.0.0.1", None, None, 404),  # loopback without a token: open as before (404: no such adapter)
    ("0.0.0.0", None, None, 403),  # listening elsewhere without a token: no management at all
    ("0.0.0.0", None, "Bearer x" * 3, 403),
    ("0.0.0.0", "t" * 32, None, 401),
    ("0.0.0.0", "t" * 32, "Bearer " + "u" * 32, 401),
    ("0.0.0.0", "t" * 32, "Basic " + "t" * 32, 401),
    ("0.0.0.0", "t" * 32, "Bearer " + "t" * 32, 404),
    ("127.0.0.1", "t" * 32, None, 401),  # a token, once set, is required on loopback too
    ("::1", None, None, 404),
])
def test_the_management_api_needs_the_token_off_loopback(host, token, sent, status):
    """Checked route by route: /adapters and /adapters/NAME; /ping stays open."""
    import http.client
    import threading
    from types import SimpleNamespace

    from fastuner_serve.api import Handler, Server
    from fastuner_serve.errors import unknown_adapter

    settings = SimpleNamespace(host=host, management_token=token, max_body_bytes=1000)

    def missing(name):
        raise unknown_adapter(name)

    server = Server(("127.0.0.1", 0), Handler)
    server.app = SimpleNamespace(settings=settings, shutting_down=threading.Event(), describe=missing,
                                 registry=SimpleNamespace(remove=missing))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for method, path in (("GET", "/adapters/x"), ("DELETE", "/adapters/x"), ("GET", "/ping")):
            conn = http.client.HTTPConnection(*server.server_address[:2], timeout=10)
            conn.request(method, path, headers={"Authorization": sent} if sent else {})
            response = conn.getresponse()
            body = json.loads(response.read())
            conn.close()
            if path == "/ping":
                assert response.status == 200
                continue
            assert response.status == status, body
            assert body["code"] == {401: "unauthorized", 403: "management_disabled", 404: "unknown_adapter"}[status]
    finally:
        server.shutdown()
        server.server_close()


def test_the_token_comes_from_the_environment_or_the_config_never_a_flag(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    settings = load_settings(["--base-model", str(base)], env={"FASTUNER_MANAGEMENT_TOKEN": "s" * 20})
    assert settings.management_token == "s" * 20 and "s" * 20 not in repr(settings)
    (tmp_path / "serve.json").write_text(json.dumps({"base_model": str(base), "management_token": "c" * 20}))
    assert load_settings(["--config", str(tmp_path / "serve.json")], env={}).management_token == "c" * 20
    with pytest.raises(StartupError, match="at least 16"):
        load_settings(["--base-model", str(base)], env={"FASTUNER_MANAGEMENT_TOKEN": "short"})
    with pytest.raises(StartupError, match="invalid arguments"):
        load_settings(["--management-token", "x" * 20, "--base-model", str(base)], env={})


def test_deep_nesting_and_lone_surrogates_are_400s():
    """Found by the fuzzer: `[[[[…]]]]` raised RecursionError and `"\\ud800"` reached the tokenizer
    (TypeError): both were 500s."""
    def refused(body: bytes) -> str:
        with pytest.raises(ApiError) as info:
            parse_invocation(body, {}, max_inputs=4, max_new_tokens_limit=100)
        assert info.value.status == 400
        return info.value.message

    assert "nested too deeply" in refused(b"[" * 100_000 + b"]" * 100_000)
    assert "nested too deeply" in refused(b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert "the input is not valid Unicode text" in refused(b'{"inputs": "a\\ud800b"}')
    assert "inputs[1] is not valid Unicode text" in refused(b'{"inputs": ["ok", "\\udfff"]}')
    assert parse_invocation(b'{"inputs": "\\ud83d\\ude00"}', {}, max_inputs=4,
                            max_new_tokens_limit=100).inputs == ("\U0001F600",)  # a pair is one character
