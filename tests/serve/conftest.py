"""Tiny models, adapters and the two shared servers, built once per test run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.serve.factory import make_adapter, make_classification_base
from tests.serve.helpers import AWS, LABELS3, LABELS5, SERVE_DIR, Reference, start
from tests.tinymodels import make_tiny_bert, make_tiny_llama

if str(SERVE_DIR) not in sys.path:  # the server's package, for the in-process tests
    sys.path.insert(0, str(SERVE_DIR))


@pytest.fixture(scope="session")
def models(tmp_path_factory, worker_id) -> dict[str, Path]:
    """bert (headless encoder), bert-cls (3-label head), llama (chat template), and their adapters.

    Built once for all xdist workers (under a file lock) in the session's shared temp folder.
    """
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent
    root = shared / "serve-models"
    paths = {key: root / key for key in ("bert", "bert-cls", "llama", "c3", "c5", "g_chat", "g_plain")}
    with FileLock(str(root) + ".lock"):
        if not (root / "done").exists():
            build_models(paths)
            # The shared classification server starts from this config: paths relative to its folder.
            (root / "serve.json").write_text(json.dumps({
                "base_model": "bert-cls", "cache_size": 2, "adapters": {"c3": "c3", "c5": "c5"}}))
            (root / "done").touch()
    return {"root": root, **paths}


def build_models(paths: dict[str, Path]) -> None:
    bert = make_tiny_bert(paths["bert"])
    bert_cls = make_classification_base(bert, paths["bert-cls"], ["base-a", "base-b", "base-c"])
    llama = make_tiny_llama(paths["llama"], chat_template=True)
    make_adapter(bert_cls, paths["c3"], task="classification", labels=LABELS3, seed=1)
    make_adapter(bert_cls, paths["c5"], task="classification", labels=LABELS5, seed=2, r=8,
                 target_modules=["query", "value"])
    make_adapter(llama, paths["g_chat"], task="text_generation", seed=3, prompt_format="chat_template")
    make_adapter(llama, paths["g_plain"], task="qa", seed=4, prompt_format="plain", r=8)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A moto S3 server on 127.0.0.1 (real HTTP; the server process reaches it via AWS_ENDPOINT_URL)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def cls_server(models, s3_endpoint, tmp_path_factory):
    """bert-cls with c3 and c5 from serve.json, cache size 2; tests on it run one at a time per worker."""
    tmp = tmp_path_factory.mktemp("cls-server")
    server = start(["--config", str(models["root"] / "serve.json"), "--download-dir", str(tmp / "downloads")],
                   tmp, "cls", env={**AWS, "AWS_ENDPOINT_URL": s3_endpoint})
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="session")
def gen_server(models, tmp_path_factory):
    server = start(["--base-model", str(models["llama"]), "--adapter", f"g_chat={models['g_chat']}",
                    "--adapter", f"g_plain={models['g_plain']}", "--cache-size", "2"],
                   tmp_path_factory.mktemp("gen-server"), "gen")
    yield server
    assert server.stop() == 0, server.stderr()


@pytest.fixture(scope="session")
def reference(models):
    """In-process outputs of plain transformers + `PeftModel.from_pretrained` (what the server must match)."""
    return Reference(models)
