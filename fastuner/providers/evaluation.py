"""Scoring a served adapter on its dataset's test split (`fastuner invoke --evaluate`).

The test split is read back through the provider that stored it (`Provider.splits`), so what is scored is
exactly what training held out; the deployment is invoked through its provider's `Endpoint`.
Metrics are defined as the training program defines them (containers/train evaluation.py): accuracy,
macro-F1 averaged over the labels present in the truth or the predictions, and exact match of the
generated text against the target after `strip()`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from fastuner.config.tasks import Task
from fastuner.errors import UserError
from fastuner.providers.base import ProviderError, SplitSource
from fastuner.providers.endpoint import Endpoint, Row, run_rows
from fastuner.state.model import State


@dataclass(frozen=True)
class EvalSplit:
    adapter: str  # address
    dataset: str  # address
    task: Task
    records: list[dict[str, Any]]  # the task's row fields

    @property
    def answer_field(self) -> str:
        return self.task.definition.target_field


def read_test_split(state: State, adapter_address: str, splits: SplitSource) -> EvalSplit:
    adapter = state.get(adapter_address)
    if adapter is None:
        raise UserError(f"{adapter_address} is not in state; --evaluate needs the adapter's dataset",
                        "Run `fastuner apply` to train it.")
    name = (adapter.inputs or {}).get("dataset")
    dataset = state.get(f"dataset.{name}") if name else None
    if dataset is None:
        raise UserError(f"{adapter_address}'s dataset (dataset.{name}) is not in state",
                        "Run `fastuner apply` to store it.")
    split = ((dataset.outputs or {}).get("splits") or {}).get("test") or {}
    if not split.get("rows") or not split.get("key"):
        raise UserError(f"{dataset.address} has no test split to evaluate on",
                        "Give it one in fastuner.yaml (split: {train: 0.8, validation: 0.1, test: 0.1}).")
    try:
        data = splits.read_split(dataset, "test")
    except ProviderError as exc:
        raise UserError(exc.message, exc.hint) from None
    records = [orjson.loads(line) for line in data.splitlines() if line.strip()]
    task = (adapter.outputs or {}).get("task") or (dataset.inputs or {}).get("task") or Task.CLASSIFICATION
    return EvalSplit(adapter_address, dataset.address, Task(task), records)


def classification_metrics(truth: list[str], predicted: list[str | None]) -> dict[str, float]:
    """accuracy and macro-F1; a row without a prediction (its request failed) counts as wrong."""
    n = len(truth)
    correct = sum(t == p for t, p in zip(truth, predicted, strict=True))
    tp: Counter[str] = Counter()
    pred_n: Counter[str] = Counter(p for p in predicted if p is not None)
    true_n: Counter[str] = Counter(truth)
    for t, p in zip(truth, predicted, strict=True):
        if t == p:
            tp[t] += 1
    labels = set(pred_n) | set(true_n)
    f1 = [2 * tp[label] / (pred_n[label] + true_n[label]) for label in labels]
    return {"accuracy": correct / n if n else 0.0, "macro_f1": sum(f1) / len(f1) if f1 else 0.0}


def exact_match(truth: list[str], generated: list[str | None]) -> float:
    hits = sum(g is not None and g.strip() == t.strip() for t, g in zip(truth, generated, strict=True))
    return hits / len(truth) if truth else 0.0


def evaluate(client: Endpoint, split: EvalSplit, adapter: str, training_metrics: dict[str, Any], *, deployment: str,
             params: dict[str, Any] | None = None, concurrency: int = 8, rows_per_request: int = 8,
             on_done: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Score the adapter as served. The base model is invoked on the same inputs for generation; for
    classification it has no head to serve, so the training run's measurement of the base with an
    untrained head (`base_test_*`) stands in for it."""
    rows = [Row(i + 1, {"input": r["input"]}) for i, r in enumerate(split.records)]
    truth = [str(r[split.answer_field]) for r in split.records]
    definition = split.task.definition
    classification = definition.classifies
    field, names = definition.answer_field, definition.metrics
    runs = {"adapter": adapter, "base model": None} if definition.base_model_answers else {"adapter": adapter}
    predictions: dict[str, list[str | None]] = {}
    failed: dict[str, int] = {}
    first_errors: dict[str, str] = {}
    for who, name in runs.items():
        out = list(run_rows(client, rows, adapter=name, params=params, concurrency=concurrency,
                            rows_per_request=rows_per_request, on_done=on_done))
        predictions[who] = [line["output"].get(field) if "output" in line else None for line in out]
        failed[who] = sum("error" in line for line in out)
        first = next((line for line in out if "error" in line), None)
        if first is not None:
            first_errors[who] = f"row {first['row']}: {first['error']}"

    def score(predicted: list[str | None]) -> dict[str, float]:
        if classification:
            return classification_metrics(truth, predicted)
        return {"exact_match": exact_match(truth, predicted)}

    trained = {n: training_metrics.get(f"test_{n}") for n in names}
    notes = []
    if not definition.base_model_answers:
        base = {n: training_metrics.get(f"base_test_{n}") for n in names}
        base_source = "training"
    else:
        base = score(predictions["base model"])
        base_source = "server"
        notes.append("The server decodes greedily up to max_new_tokens (64 unless --max-new-tokens) and stops "
                     "at EOS; the training run's exact match bounds each answer by its target's length, "
                     "so it can read higher.")
    return {
        "deployment": deployment, "adapter": f"adapter.{adapter}", "dataset": split.dataset, "task": split.task,
        "rows": len(rows), "metrics": list(names), "adapter_metrics": score(predictions["adapter"]),
        "base_metrics": base, "base_source": base_source, "training_metrics": trained,
        "failed": failed, "first_errors": first_errors, "notes": notes,
    }
