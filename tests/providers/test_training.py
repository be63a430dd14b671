"""The provider-neutral spec → training program mapping: the settings every provider sends the program,
and the metric definitions a SageMaker job parses its log with."""

from __future__ import annotations

import re
from pathlib import Path

from fastuner.providers.training import MAX_METRIC_REGEX, MAX_METRICS, metric_definitions, training_config

STEP = "[fastuner] step=12 total_steps=300 epoch=0.40 train_loss=1.2345 lr=2.0e-04 tokens_per_s=15321.0 eta_s=310.0"
EVAL = "[fastuner] step=300 total_steps=300 epoch=1.00 test_loss=0.5 test_accuracy=0.875 base_test_accuracy=0.25"


def parsed(line: str) -> dict[str, float]:
    found = {}
    for d in metric_definitions():
        m = re.search(d["Regex"], line)
        if m:
            found[d["Name"]] = float(m.group(1))
    return found


def test_metric_definitions_parse_the_programs_lines_within_sagemakers_limits() -> None:
    assert len(metric_definitions()) <= MAX_METRICS
    assert all(len(d["Regex"]) <= MAX_METRIC_REGEX for d in metric_definitions())
    assert parsed(STEP) == {"step": 12, "epoch": 0.4, "train_loss": 1.2345, "learning_rate": 2e-4,
                            "tokens_per_s": 15321.0}
    assert parsed(EVAL) == {"step": 300, "epoch": 1.0, "test_loss": 0.5, "test_accuracy": 0.875,
                            "base_test_accuracy": 0.25}


def test_training_config_maps_the_spec_and_the_dataset(tmp_path: Path) -> None:
    (tmp_path / "models" / "tiny").mkdir(parents=True)
    inputs = {"base_model": "models/tiny", "method": "lora",
              "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"},
              "training": {"epochs": 2, "learning_rate": 1e-4, "warmup_ratio": 0.1, "weight_decay": 0.0,
                           "batch_tokens": 4096, "max_seq_len": 256, "grad_accum": 1,
                           "gradient_checkpointing": False, "seed": 7, "checkpoint_every": 50}}
    dataset = {"task": "classification", "checks": {"max_input_chars": 512}}
    config = training_config(inputs, dataset, ["neg", "pos", "mixed"], tmp_path, "/opt/ml/checkpoints")
    assert config["base_model"] == str((tmp_path / "models" / "tiny").resolve())  # a local folder: absolute
    assert config["labels"] == ["mixed", "neg", "pos"]
    assert (config["task"], config["lora_r"], config["epochs"], config["max_steps"]) == ("classification", 8, 2, None)
    assert (config["checkpoint_dir"], config["max_input_chars"]) == ("/opt/ml/checkpoints", 512)
    hub = training_config({**inputs, "base_model": "org/model"}, {"task": "qa"}, None, tmp_path, "ck")
    assert hub["base_model"] == "org/model" and "labels" not in hub and hub["max_input_chars"] is None
