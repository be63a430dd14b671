"""In-process: one forward mixing rows of several adapters (and the base) equals each adapter alone."""

from __future__ import annotations

import pytest
from fastuner_serve.adapters import Registry
from fastuner_serve.engine import Engine, load_base
from fastuner_serve.errors import ApiError
from fastuner_serve.metrics import Metrics
from fastuner_serve.protocol import GenerationParams, Invocation
from fastuner_serve.settings import Settings

from tests.serve.factory import make_adapter
from tests.serve.helpers import LABELS3, LABELS5, TEXTS


def run_queued(engine: Engine, requests: list[tuple[str | None, list[str]]]) -> list[list[dict]]:
    """Queue every request before the worker starts, so they are taken as one batch."""
    futures = [engine.submit(engine.prepare(Invocation(adapter, tuple(texts), True, GenerationParams(), ())))
               for adapter, texts in requests]
    engine.start()
    try:
        return [f.result(60) for f in futures]
    finally:
        engine.stop(60)


def make_engine(base, adapters: dict[str, str], cache_size: int) -> tuple[Engine, Metrics]:
    settings = Settings(base_model=str(base), adapters=adapters, cache_size=cache_size, threads=1)
    loaded = load_base(settings, "classification")
    registry = Registry(loaded.identity, None)
    for name, location in adapters.items():
        registry.register(name, location)
    metrics = Metrics()
    return Engine(loaded, registry, metrics, settings), metrics


def test_mixed_batch_bert_heads_of_3_and_5_labels_and_the_base(models, reference):
    engine, metrics = make_engine(models["bert-cls"], {"c3": str(models["c3"]), "c5": str(models["c5"])}, 2)
    requests = [("c3", TEXTS[:2]), (None, TEXTS[1:3]), ("c5", TEXTS), ("c3", TEXTS[3:])]
    results = run_queued(engine, requests)
    assert metrics.batch_rows.count == 1 and metrics.batch_rows.total == 9  # one forward, 9 rows
    labels = {"c3": LABELS3, "c5": LABELS5, None: ["base-a", "base-b", "base-c"]}
    for (adapter, texts), outs in zip(requests, results, strict=True):
        for text, out in zip(texts, outs, strict=True):
            want = reference.classify(adapter, text, labels[adapter])
            assert list(out["scores"]) == list(want)
            assert all(abs(out["scores"][k] - v) < 1e-5 for k, v in want.items()), (adapter, text)


def test_mixed_batch_llama_score_heads_with_padding(models, reference, tmp_path):
    """Llama classification pools the last non-pad token: rows of different lengths, 2 and 4 labels."""
    two, four = ["n", "y"], ["a", "b", "c", "d"]
    make_adapter(models["llama"], tmp_path / "l2", task="classification", labels=two, seed=5)
    make_adapter(models["llama"], tmp_path / "l4", task="classification", labels=four, seed=6, r=2)
    engine, metrics = make_engine(models["llama"], {"l2": str(tmp_path / "l2"), "l4": str(tmp_path / "l4")}, 2)
    with pytest.raises(ApiError) as error:  # the headless base cannot classify on its own
        engine.prepare(Invocation(None, ("x",), False, GenerationParams(), ()))
    assert (error.value.status, error.value.code) == (400, "adapter_required")
    requests = [("l2", TEXTS[:2]), ("l4", TEXTS[2:]), ("l2", TEXTS[3:])]
    results = run_queued(engine, requests)
    assert metrics.batch_rows.count == 1
    import torch

    tok = reference.tokenizers["llama"]
    for (adapter, texts), outs in zip(requests, results, strict=True):
        labels = two if adapter == "l2" else four
        model = reference.model(tmp_path / adapter, "llama", "classification", len(labels))
        for text, out in zip(texts, outs, strict=True):
            with torch.inference_mode():
                logits = model(**tok(text, return_tensors="pt")).logits[0]
            want = torch.softmax(logits, -1).tolist()
            assert all(abs(out["scores"][k] - v) < 1e-5 for k, v in zip(labels, want, strict=True))
