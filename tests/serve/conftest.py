"""Tiny models, adapters and the two shared servers, built once per test process."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parents[1] / "containers" / "serve")]

from factory import make_adapter, make_classification_base  # noqa: E402
from harness import ServerProcess  # noqa: E402
from tinymodels import make_tiny_bert, make_tiny_llama  # noqa: E402

LABELS3 = ["neg", "neu", "pos"]
LABELS5 = ["billing", "shipping", "refund", "account", "other"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
TEXTS = ["where is my order it was supposed to arrive yesterday", "how do I reset my password",
         "I want a refund", "the quick brown fox"]


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


def start(args: list[str], tmp: Path, name: str, **kwargs) -> ServerProcess:
    return ServerProcess(args, log_path=tmp / f"{name}.log", **kwargs).wait_ready()


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


class Reference:
    """Adapters are named by their key in `models` or given as a folder; `base` likewise."""

    def __init__(self, models):
        from transformers import AutoTokenizer

        self.models = models
        self.tokenizers = {key: AutoTokenizer.from_pretrained(models[key]) for key in ("bert-cls", "llama")}
        self._cache: dict[tuple, object] = {}

    def model(self, adapter, base, task: str, num_labels: int | None = None):
        adapter_dir = self.models.get(adapter, adapter) if adapter is not None else None
        base_dir = self.models.get(base, base)
        key = (str(base_dir), str(adapter_dir), num_labels)
        if key not in self._cache:
            from factory import load_base
            from peft import PeftModel

            model = load_base(base_dir, task, num_labels)
            if adapter_dir is not None:
                model = PeftModel.from_pretrained(model, adapter_dir)
            self._cache[key] = model.eval()
        return self._cache[key]

    def classify(self, adapter, text: str, labels: list[str], base="bert-cls") -> dict[str, float]:
        import torch

        model = self.model(adapter, base, "classification", len(labels))
        encoded = self.tokenizers["bert-cls"](text, return_tensors="pt")
        with torch.inference_mode():
            probs = torch.softmax(model(**encoded).logits[0].float(), -1).tolist()
        return dict(zip(labels, probs, strict=True))

    def prompt_ids(self, text: str, prompt_format: str | None) -> list[int]:
        """containers/README.md: chat template (no extra special tokens) or `input + "\\n"`."""
        tok = self.tokenizers["llama"]
        if prompt_format == "chat_template":
            prompt = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                             add_generation_prompt=True)
            return tok(prompt, add_special_tokens=False)["input_ids"]
        return tok(text + "\n" if prompt_format == "plain" else text)["input_ids"]

    def generate(self, adapter, text: str, prompt_format: str | None, max_new_tokens: int) -> str:
        import torch

        model = self.model(adapter, "llama", "generation")
        ids = torch.tensor([self.prompt_ids(text, prompt_format)])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False)
        return self.tokenizers["llama"].decode(out[0, ids.shape[1]:], skip_special_tokens=True)
