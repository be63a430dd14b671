"""The adapter artifact at the root of SM_MODEL_DIR: PEFT files + fastuner.json + metrics.json.
Tarred as is (files at the tar root) it is a SageMaker adapter inference component artifact.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .settings import Hyperparameters

FORMAT_VERSION = 1


def describe(hp: Hyperparameters, *, labels: list[str] | None, prompt_format: str, tokenizer_hash: str,
             chat_template_hash: str | None, metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "task": hp.task,
        "base_model": hp.base_model,
        "base_model_revision": hp.base_model_revision,
        "labels": labels,
        "prompt_format": prompt_format,
        "tokenizer_hash": tokenizer_hash,
        "chat_template_hash": chat_template_hash,
        "lora_r": hp.lora_r,
        "lora_alpha": int(hp.lora_alpha) if float(hp.lora_alpha).is_integer() else hp.lora_alpha,
        "target_modules": hp.target_modules if isinstance(hp.target_modules, str) else list(hp.target_modules),
        "method": hp.method,
        "max_input_chars": hp.max_input_chars,
        "metrics": metrics,
    }


def write_artifact(model: Any, model_dir: Path, output_data_dir: Path, description: dict[str, Any]) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(model_dir))
    readme = model_dir / "README.md"  # PEFT's model-card stub; not part of the artifact
    if readme.is_file():
        readme.unlink()
    _write_json(model_dir / "fastuner.json", description)
    _write_json(model_dir / "metrics.json", description["metrics"])
    output_data_dir.mkdir(parents=True, exist_ok=True)
    _write_json(output_data_dir / "metrics.json", description["metrics"])


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
