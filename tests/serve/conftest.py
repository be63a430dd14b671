"""Tiny models, adapters and the two shared servers, built once per test process."""

from __future__ import annotations

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
TEXTS = ["where is my order it was supposed to arrive yesterday", "how do I reset my password",
         "I want a refund", "the quick brown fox"]


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    """bert (headless encoder), bert-cls (3-label head), llama (chat template), and their adapters."""
    root = tmp_path_factory.mktemp("serve-models")
    bert = make_tiny_bert(root / "bert")
    bert_cls = make_classification_base(bert, root / "bert-cls", ["base-a", "base-b", "base-c"])
    llama = make_tiny_llama(root / "llama", chat_template=True)
    return {
        "root": root, "bert": bert, "bert-cls": bert_cls, "llama": llama,
        "c3": make_adapter(bert_cls, root / "c3", task="classification", labels=LABELS3, seed=1),
        "c5": make_adapter(bert_cls, root / "c5", task="classification", labels=LABELS5, seed=2, r=8,
                           target_modules=["query", "value"]),
        "g_chat": make_adapter(llama, root / "g_chat", task="text_generation", seed=3,
                               prompt_format="chat_template"),
        "g_plain": make_adapter(llama, root / "g_plain", task="qa", seed=4, prompt_format="plain", r=8),
    }


def start(args: list[str], tmp: Path, name: str, **kwargs) -> ServerProcess:
    return ServerProcess(args, log_path=tmp / f"{name}.log", **kwargs).wait_ready()


@pytest.fixture(scope="session")
def cls_server(models, tmp_path_factory):
    server = start(["--base-model", str(models["bert-cls"]), "--adapter", f"c3={models['c3']}",
                    "--adapter", f"c5={models['c5']}", "--cache-size", "4"],
                   tmp_path_factory.mktemp("cls-server"), "cls")
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
    def __init__(self, models):
        from transformers import AutoTokenizer

        self.models = models
        self.tokenizers = {key: AutoTokenizer.from_pretrained(models[key]) for key in ("bert-cls", "llama")}
        self._cache: dict[str, object] = {}

    def model(self, adapter: str | None, base: str, task: str, num_labels: int | None = None):
        key = f"{base}:{adapter}"
        if key not in self._cache:
            from factory import load_base
            from peft import PeftModel

            model = load_base(self.models[base], task, num_labels)
            if adapter is not None:
                model = PeftModel.from_pretrained(model, self.models[adapter])
            self._cache[key] = model.eval()
        return self._cache[key]

    def classify(self, adapter: str | None, text: str, labels: list[str]) -> dict[str, float]:
        import torch

        model = self.model(adapter, "bert-cls", "classification", len(labels))
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

    def generate(self, adapter: str | None, text: str, prompt_format: str | None, max_new_tokens: int) -> str:
        import torch

        model = self.model(adapter, "llama", "generation")
        ids = torch.tensor([self.prompt_ids(text, prompt_format)])
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=max_new_tokens, do_sample=False)
        return self.tokenizers["llama"].decode(out[0, ids.shape[1]:], skip_special_tokens=True)
