"""How many tokens an adapter's training split holds, for the plan's training estimate.

Counted with the base model's own tokenizer when the base model is a local folder with a
`tokenizer.json` (the `tokenizers` library loads it offline, in well under a second); otherwise
estimated as characters ÷ `CHARS_PER_TOKEN` (about 4 for English text with the BPE tokenizers of
current models: a rule of thumb, said as such in the plan). Every string field of each row counts
(the input and the target or label), and the train split's share is the spec's `split.train` fraction
of the whole file (the split is by row hash, so its share of the text is that fraction on average).

Counting reads the whole file, so a count is cached by what it depends on: the file's SHA-256, the
tokenizer file's SHA-256 (or "chars") and the fraction, in `<cache>/tokens.json`.

The base model's size, for the throughput table, comes from a local folder's `config.json` when there
is one (`params_b`), as the usual transformer count: layers × (q, k, v, o projections, k and v
narrower under grouped-query attention, + 2 or 3 h × ffn) +
vocabulary × h.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

from fastuner.plan.estimate import CHARS_PER_TOKEN

CACHE_FILE = "tokens.json"
_BATCH = 1024


def count_train_tokens(dataset: Path, source_sha256: str, train_fraction: Fraction | float, model_dir: Path | None,
                       cache_dir: Path | None) -> dict[str, Any]:
    """{"tokens": the train split's tokens, "counted": "tokenizer" | "chars"}, from the cache when it has it."""
    tokenizer = model_dir / "tokenizer.json" if model_dir is not None else None
    if tokenizer is not None and not tokenizer.is_file():
        tokenizer = None
    key = f"{source_sha256}:{_sha256(tokenizer) if tokenizer else 'chars'}:{float(train_fraction):.6f}"
    cache = _read_cache(cache_dir)
    if key in cache:
        return dict(cache[key])
    total, counted = None, "chars"
    if tokenizer is not None:
        try:
            total, counted = _count_with_tokenizer(dataset, tokenizer), "tokenizer"
        except OSError:
            raise
        except Exception:  # a tokenizer.json the library cannot load: the estimate falls back on characters
            total = None
    if total is None:
        total = sum(len(t) for t in _texts(dataset)) / CHARS_PER_TOKEN
    result = {"tokens": round(total * float(train_fraction)), "counted": counted}
    _write_cache(cache_dir, {**cache, key: result})
    return result


def model_params_b(model_dir: Path | None) -> float | None:
    """The model's size in billions from its `config.json` (None without one, or for a shape it lacks)."""
    if model_dir is None or not (model_dir / "config.json").is_file():
        return None
    try:
        config = json.loads((model_dir / "config.json").read_text())
        h, layers, vocab = int(config["hidden_size"]), int(config["num_hidden_layers"]), int(config["vocab_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ffn = int(config.get("intermediate_size") or 4 * h)
    gated = config.get("hidden_act", "") in ("silu", "swiglu") or "llama" in str(config.get("model_type", ""))
    heads = int(config.get("num_attention_heads") or 1)
    kv = int(config.get("num_key_value_heads") or heads)  # grouped-query attention: smaller k and v
    per_layer = 2 * h * h + 2 * h * h * kv // heads + (3 if gated else 2) * h * ffn
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", True) else 2)
    return (layers * per_layer + embeddings) / 1e9


def _texts(path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # the dataset's own checks report it; a count skips it
            if isinstance(row, dict):
                yield from (str(v) for v in row.values() if isinstance(v, str | int) and not isinstance(v, bool))


def _count_with_tokenizer(dataset: Path, tokenizer_file: Path) -> int:
    from tokenizers import Tokenizer  # a second to import: only when a local tokenizer is there

    tok = Tokenizer.from_file(str(tokenizer_file))
    total, batch = 0, []
    for text in _texts(dataset):
        batch.append(text)
        if len(batch) == _BATCH:
            total += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
            batch = []
    if batch:
        total += sum(len(e.ids) for e in tok.encode_batch(batch, add_special_tokens=False))
    return total


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _read_cache(cache_dir: Path | None) -> dict[str, Any]:
    if cache_dir is None:
        return {}
    try:
        found = json.loads((cache_dir / CACHE_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _write_cache(cache_dir: Path | None, cache: dict[str, Any]) -> None:
    """Best effort: a cache that cannot be written only means counting again next time."""
    if cache_dir is None:
        return
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{CACHE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(cache, sort_keys=True))
        tmp.replace(cache_dir / CACHE_FILE)
    except OSError:
        pass


def spec_work(spec: Any, sources: Mapping[str, str], cache_dir: Path | None) -> dict[str, dict[str, Any]]:
    """What each adapter of the spec will train on, for the plan's estimate: {adapter name: {"tokens",
    "counted", "params_b" (when the base model's config says)}}. An adapter whose dataset cannot be
    read (the plan reports that itself) gets no entry, and its estimate is the bound alone."""
    from fastuner.data.rules import split_fractions

    out: dict[str, dict[str, Any]] = {}
    for name, adapter in spec.config.adapters.items():
        dataset = spec.config.datasets.get(adapter.dataset)
        if dataset is None or adapter.dataset not in sources:
            continue
        local = spec.resolve(adapter.base_model)
        model_dir = local if local.is_dir() else None
        try:
            counted = count_train_tokens(spec.resolve(dataset.path), sources[adapter.dataset],
                                         split_fractions(dataset.split)[0], model_dir, cache_dir)
        except (OSError, ValueError):
            continue
        size = model_params_b(model_dir)
        out[name] = {**counted, **({"params_b": round(size, 4)} if size else {})}
    return out
