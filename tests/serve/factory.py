"""Adapter artifacts for tests and the benchmark, built directly with PEFT (no training program).

LoRA A and B and the classification head get random values, so an adapter's outputs differ from the
base model's and from every other adapter's. The artifact follows containers/README.md: PEFT files plus
`fastuner.json`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

_SERVE = str(Path(__file__).resolve().parents[2] / "containers" / "serve")
if _SERVE not in sys.path:
    sys.path.insert(0, _SERVE)

from fastuner_serve.engine import tokenizer_hash  # noqa: E402  (the contract's definition, as served)


def make_classification_base(source: str | Path, path: str | Path, labels: list[str], *, seed: int = 0) -> Path:
    """`source` re-saved as a *ForSequenceClassification checkpoint with a (random) head for `labels`."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        source, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return Path(path)


def load_base(base: str | Path, task: str, num_labels: int | None = None):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if task == "classification":
        return AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=num_labels, ignore_mismatched_sizes=True)
    return AutoModelForCausalLM.from_pretrained(base)


def make_adapter(base: str | Path, path: str | Path, *, task: str, labels: list[str] | None = None,
                 seed: int = 0, r: int = 4, alpha: int = 8, target_modules="all-linear",
                 prompt_format: str = "plain", **meta) -> Path:
    """Save a random LoRA adapter for `base` at `path`; `meta` overrides fastuner.json fields."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoTokenizer

    path = Path(path)
    torch.manual_seed(seed)
    model = load_base(base, task, len(labels) if labels else None)
    if task == "classification":
        head = model.get_submodule("classifier" if hasattr(model, "classifier") else "score")
        for param in head.parameters():
            torch.nn.init.normal_(param, std=0.5)
    config = LoraConfig(
        task_type=TaskType.SEQ_CLS if task == "classification" else TaskType.CAUSAL_LM,
        r=r, lora_alpha=alpha, target_modules=target_modules, lora_dropout=0.0, init_lora_weights=False,
    )
    peft_model = get_peft_model(model, config)
    peft_model.save_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(base)
    fastuner = {
        "format_version": 1, "task": task, "base_model": str(base), "base_model_revision": None,
        "labels": labels if task == "classification" else None, "prompt_format": prompt_format,
        "tokenizer_hash": tokenizer_hash(tokenizer), "chat_template_hash": None, "lora_r": r,
        "lora_alpha": alpha, "target_modules": target_modules, "method": "lora", "metrics": {},
    }
    fastuner.update(meta)
    (path / "fastuner.json").write_text(json.dumps(fastuner, indent=2))
    return path
