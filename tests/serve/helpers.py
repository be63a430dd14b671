"""Shared test data, the server starter and the in-process reference (plain transformers + PEFT)."""

from __future__ import annotations

from pathlib import Path

from tests.serve.harness import ROOT, ServerProcess

SERVE_DIR = ROOT / "containers" / "serve"
LABELS3 = ["neg", "neu", "pos"]
LABELS5 = ["billing", "shipping", "refund", "account", "other"]
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
TEXTS = ["where is my order it was supposed to arrive yesterday", "how do I reset my password",
         "I want a refund", "the quick brown fox"]


def start(args: list[str], tmp: Path, name: str, **kwargs) -> ServerProcess:
    return ServerProcess(args, log_path=tmp / f"{name}.log", **kwargs).wait_ready()


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
            from peft import PeftModel

            from tests.serve.factory import load_base

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
