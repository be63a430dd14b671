"""Reading and checking an adapter artifact (containers/README.md) without torch.

`read_artifact` parses `fastuner.json`, `adapter_config.json` and the safetensors header, and classifies
every saved tensor as a LoRA A/B pair or a saved module (PEFT `modules_to_save`, e.g. a classification
head). Anything this server would silently serve wrong (DoRA, trained biases, LoRA on embeddings, a
truncated file) is refused here, with the reason, before a single weight is loaded.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .tasks import TASK_FAMILIES

PREFIX = "base_model.model."
LORA_SUFFIXES = {".lora_A.weight": "A", ".lora_B.weight": "B"}
# adapter_config keys that change what the weights mean; a non-default value is refused.
UNSUPPORTED_CONFIG = {
    "use_dora": (False, None), "fan_in_fan_out": (False, None), "bias": ("none", None),
    "lora_bias": (False, None), "target_parameters": (None, []), "layer_replication": (None, []),
    "trainable_token_indices": (None, {}, []), "use_qalora": (False, None),
    "alora_invocation_tokens": (None, []), "use_bdlora": (None, False),
}
TASK_TYPES = {"classification": "SEQ_CLS", "generation": "CAUSAL_LM"}
PROMPT_FORMATS = ("chat_template", "plain")


class ArtifactError(Exception):
    """The folder is not a servable adapter artifact; the message names the file and the problem."""


@dataclass(frozen=True)
class LoraTarget:
    module: str
    rank: int
    in_features: int
    out_features: int
    scaling: float


@dataclass(frozen=True)
class AdapterArtifact:
    path: Path
    task: str  # as in fastuner.json: classification, text_generation or qa
    labels: tuple[str, ...] | None
    prompt_format: str
    base_model: str
    base_model_revision: str | None
    tokenizer_hash: str | None
    max_input_chars: int | None  # the limit of the dataset it was trained on (None: an older artifact)
    targets: tuple[LoraTarget, ...]
    saved_modules: Mapping[str, Mapping[str, tuple[int, ...]]]  # module -> parameter -> shape
    weights_file: Path
    size_bytes: int

    @property
    def server_task(self) -> str:
        return TASK_FAMILIES[self.task]

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task, "labels": list(self.labels) if self.labels else None,
            "prompt_format": self.prompt_format, "base_model": self.base_model,
            "max_input_chars": self.max_input_chars, "lora_modules": len(self.targets), "max_rank": max((t.rank for t in self.targets), default=0),
            "size_bytes": self.size_bytes,
        }


def read_artifact(path: str | Path) -> AdapterArtifact:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"adapter folder {path} does not exist")
    meta = read_json(path / "fastuner.json")
    config = read_json(path / "adapter_config.json")
    weights_file = path / "adapter_model.safetensors"
    header = read_safetensors_header(weights_file)

    task = meta.get("task")
    if task not in TASK_FAMILIES:
        raise ArtifactError(f"{path / 'fastuner.json'}: unknown task {task!r}")
    if meta.get("format_version", 1) != 1:
        raise ArtifactError(f"{path / 'fastuner.json'}: format_version {meta.get('format_version')!r} "
                            "is newer than this server understands (1)")
    base_model = meta.get("base_model")
    if not isinstance(base_model, str) or not base_model:
        raise ArtifactError(f"{path / 'fastuner.json'}: base_model is missing")
    labels = meta.get("labels")
    if task == "classification":
        if not (isinstance(labels, list) and len(labels) >= 2 and all(isinstance(x, str) for x in labels)):
            raise ArtifactError(f"{path / 'fastuner.json'}: a classification adapter needs a list of labels")
        if len(set(labels)) != len(labels):
            raise ArtifactError(f"{path / 'fastuner.json'}: labels repeat")
    prompt_format = meta.get("prompt_format") or "plain"
    if prompt_format not in PROMPT_FORMATS:
        raise ArtifactError(f"{path / 'fastuner.json'}: unknown prompt_format {prompt_format!r}")

    max_input_chars = meta.get("max_input_chars")
    if max_input_chars is not None and (type(max_input_chars) is not int or max_input_chars < 1):
        raise ArtifactError(f"{path / 'fastuner.json'}: max_input_chars must be a positive integer, "
                            f"got {max_input_chars!r}")

    server_task = TASK_FAMILIES[task]
    check_config(config, path / "adapter_config.json", server_task)
    targets, saved = classify_tensors(header, config, path / "adapter_model.safetensors")
    if not targets:
        raise ArtifactError(f"{weights_file}: no LoRA weights")
    if task == "classification":
        head_outputs = {shape[0] for params in saved.values() for name, shape in params.items()
                        if name.endswith("weight") and len(shape) == 2}
        if len(labels) not in head_outputs:
            raise ArtifactError(f"{weights_file}: no saved classification head with {len(labels)} outputs "
                                f"(one per label) among modules {sorted(saved)}")
    return AdapterArtifact(
        path=path, task=task, labels=tuple(labels) if task == "classification" else None,
        prompt_format=prompt_format, base_model=base_model,
        base_model_revision=meta.get("base_model_revision"), tokenizer_hash=meta.get("tokenizer_hash"),
        max_input_chars=max_input_chars, targets=tuple(targets), saved_modules=saved, weights_file=weights_file,
        size_bytes=weights_file.stat().st_size,
    )


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not readable JSON: {error}") from None
    if not isinstance(value, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return value


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor table of a safetensors file, checked against the file size (catches truncation)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ArtifactError(f"{path} is not a safetensors file (too short)")
            (length,) = struct.unpack("<Q", prefix)
            if length > min(size - 8, 100_000_000):
                raise ArtifactError(f"{path} is not a safetensors file (bad header length)")
            header = json.loads(f.read(length))
    except FileNotFoundError:
        raise ArtifactError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path} is not a safetensors file: {error}") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path} is not a safetensors file (header is not an object)")
    header.pop("__metadata__", None)
    end = 0
    for name, info in header.items():
        try:
            begin, stop = info["data_offsets"]
            shape = [int(d) for d in info["shape"]]
        except (KeyError, TypeError, ValueError):
            raise ArtifactError(f"{path}: tensor {name} has a malformed entry") from None
        if stop < begin or (shape and math.prod(shape) == 0 and stop != begin):
            raise ArtifactError(f"{path}: tensor {name} has bad offsets")
        end = max(end, stop)
    if 8 + length + end > size:
        raise ArtifactError(f"{path} is truncated ({size} bytes, the header needs {8 + length + end})")
    return header


def check_config(config: dict[str, Any], where: Path, server_task: str) -> None:
    if config.get("peft_type") != "LORA":
        raise ArtifactError(f"{where}: peft_type {config.get('peft_type')!r} is not served (only LORA)")
    task_type = config.get("task_type")
    if task_type != TASK_TYPES[server_task]:
        raise ArtifactError(f"{where}: task_type {task_type!r} does not fit a {server_task} adapter "
                            f"(expected {TASK_TYPES[server_task]})")
    for key, allowed in UNSUPPORTED_CONFIG.items():
        if config.get(key) not in allowed:
            raise ArtifactError(f"{where}: {key}={config.get(key)!r} is not supported by this server")
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float) or config[key] <= 0:
            raise ArtifactError(f"{where}: {key} must be a positive number")


def classify_tensors(header: dict[str, dict[str, Any]], config: dict[str, Any], where: Path,
                     ) -> tuple[list[LoraTarget], dict[str, dict[str, tuple[int, ...]]]]:
    pairs: dict[str, dict[str, tuple[int, ...]]] = {}
    saved: dict[str, dict[str, tuple[int, ...]]] = {}
    save_names = list(config.get("modules_to_save") or [])
    for key, info in header.items():
        if not key.startswith(PREFIX):
            raise ArtifactError(f"{where}: tensor {key} does not start with {PREFIX}")
        name = key[len(PREFIX):]
        shape = tuple(int(d) for d in info["shape"])
        suffix = next((s for s in LORA_SUFFIXES if name.endswith(s)), None)
        if suffix is not None:
            pairs.setdefault(name[: -len(suffix)], {})[LORA_SUFFIXES[suffix]] = shape
            continue
        module = saved_module_of(name, save_names)
        if module is None:
            raise ArtifactError(f"{where}: tensor {key} is neither a LoRA A/B weight nor in modules_to_save "
                                "(DoRA, trained biases and LoRA on embeddings are not served)")
        saved.setdefault(module, {})[name[len(module) + 1:]] = shape

    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    targets = []
    for module, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"} or len(ab["A"]) != 2 or len(ab["B"]) != 2:
            raise ArtifactError(f"{where}: {module} needs a 2-D lora_A and lora_B weight")
        (r_a, in_features), (out_features, r_b) = ab["A"], ab["B"]
        rank = rank_pattern.get(pattern_key(rank_pattern, module), config["r"])
        alpha = alpha_pattern.get(pattern_key(alpha_pattern, module), config["lora_alpha"])
        if not r_a == r_b == rank:
            raise ArtifactError(f"{where}: {module} has rank {r_a}/{r_b} but adapter_config says {rank}")
        scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        targets.append(LoraTarget(module, rank, in_features, out_features, scaling))
    return targets, saved


def saved_module_of(name: str, save_names: list[str]) -> str | None:
    """The module path under which PEFT saved `name`, if it belongs to a `modules_to_save` entry."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module = ".".join(parts[:i])
        if any(module == s or module.endswith("." + s) for s in save_names):
            return module
    return None


def pattern_key(patterns: Mapping[str, Any], module: str) -> str:
    """PEFT's `get_pattern_key`: the first pattern matching the end of the module path."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


def base_model_names(base_model: str, extra_ids: tuple[str, ...]) -> frozenset[str]:
    """Every name an adapter's `base_model` may give for the loaded base (see README, 'Matching')."""
    names = {normalize_name(base_model), *(normalize_name(i) for i in extra_ids)}
    path = Path(base_model).expanduser()
    if path.exists():
        resolved = path.resolve()
        names.add(str(resolved))
        match = re.search(r"models--([^/]+)--([^/]+)/snapshots/[^/]+$", str(resolved))
        if match:
            names.add(f"{match.group(1)}/{match.group(2)}".lower())
    return frozenset(names)


def normalize_name(name: str) -> str:
    """A local path becomes its resolved absolute path; a hub id is compared case-insensitively."""
    path = Path(name).expanduser()
    if name.startswith(("/", "./", "../", "~")) or path.exists():
        return str(Path(os.path.abspath(path)).resolve())
    return name.lower()
