"""What an adapter's spec tells the training program (containers/train), for every provider.

The local provider writes `training_config` as the run's `hyperparameters.json`; a SageMaker training
job sends the same settings as hyperparameters and parses the same `metric_definitions` from the job's
log. Keeping the mapping here is what makes one spec train the same adapter on both.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from fastuner.providers.programs import CONTAINERS

# SageMaker's limits on a training job's metric definitions
MAX_METRICS = 40
MAX_METRIC_REGEX = 500


def resolve_model(value: str, spec_dir: Path) -> str:
    """A local folder (absolute, or relative to fastuner.yaml) becomes an absolute path; anything else
    is a hub id for transformers (HF_HOME and HF_HUB_OFFLINE are honoured by the program)."""
    p = Path(value).expanduser()
    candidate = p if p.is_absolute() else spec_dir / p
    if candidate.exists():
        return str(candidate.resolve())
    return value


def training_config(inputs: dict[str, Any], dataset_inputs: dict[str, Any], labels: list[str] | None,
                    spec_dir: Path, checkpoint_dir: str | Path) -> dict[str, Any]:
    """The training program's config (containers/README.md) from an adapter's resolved inputs and its
    dataset's. The dataset's `max_input_chars` goes into the artifact's fastuner.json, so the server
    refuses inputs the adapter was never trained on (wherever the artifact is served).
    `checkpoint_dir` is where the provider keeps checkpoints (a run folder's, or SageMaker's
    /opt/ml/checkpoints)."""
    lora, training = inputs["lora"], inputs["training"]
    config: dict[str, Any] = {
        "task": dataset_inputs["task"],
        "base_model": resolve_model(inputs["base_model"], spec_dir),
        "base_model_revision": inputs.get("base_model_revision"),
        "method": inputs["method"],
        "lora_r": lora["r"], "lora_alpha": lora["alpha"], "lora_dropout": lora["dropout"],
        "target_modules": lora["target_modules"],
        "epochs": training["epochs"], "learning_rate": training["learning_rate"],
        "warmup_ratio": training["warmup_ratio"], "weight_decay": training["weight_decay"],
        "batch_tokens": training["batch_tokens"], "max_seq_len": training["max_seq_len"],
        "grad_accum": training["grad_accum"], "gradient_checkpointing": training["gradient_checkpointing"],
        "seed": training["seed"], "checkpoint_every": training["checkpoint_every"],
        "max_steps": training.get("max_steps"),
        "checkpoint_dir": str(checkpoint_dir),
        "max_input_chars": (dataset_inputs.get("checks") or {}).get("max_input_chars"),
    }
    if labels:
        config["labels"] = sorted(labels)
    return config


@functools.cache
def metric_definitions() -> tuple[dict[str, str], ...]:
    """`{"Name", "Regex"}` for each metric the program logs (containers/train/metric_definitions.json,
    beside the program that prints them), checked against SageMaker's limits."""
    definitions = tuple(json.loads((CONTAINERS / "train" / "metric_definitions.json").read_text()))
    if len(definitions) > MAX_METRICS:
        raise ValueError(f"{len(definitions)} metric definitions; SageMaker takes at most {MAX_METRICS}")
    for d in definitions:
        if len(d["Regex"]) > MAX_METRIC_REGEX:
            raise ValueError(f"the regex of metric {d['Name']} is over {MAX_METRIC_REGEX} characters")
    return definitions
