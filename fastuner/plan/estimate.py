"""How long a training job will run, from the work it does rather than from its `max_runtime`.

    seconds = start-up + tokens × epochs ÷ (throughput of the instance type for a 1B model ÷ size in B)
              × calibration,                                     capped by max_runtime

- `tokens`: the train split's tokens, counted by refresh with the base model's tokenizer when it loads
  offline from a local path, else estimated from characters (`CHARS_PER_TOKEN`, the usual rule for
  English text with BPE tokenizers); the plan says which.
- `THROUGHPUT_1B`: training tokens per second for LoRA on a ~1B-parameter model, bf16, packed
  sequences, by instance type (all its GPUs, data parallel). Anchored on a measurement recorded in
  this project (one H100, a Llama-3.2-1B-shaped model, LoRA r=16 on all linear layers, packed 4 × 2048:
  about 29,700 tokens/s) and scaled for other GPUs by their dense bf16 (fp16 for T4/V100) tensor peak
  relative to the H100's, with 90 % scaling per extra GPU. The time per token grows with the parameter
  count (LoRA still runs the whole model forward and backward), so it is divided by the size in
  billions when the size is known (from the model's name, "7B", or its config), and a 1B model is
  assumed, and said, when it is not.
- `startup_seconds`: what a job bills before and after its training loop (container and data download,
  model weights, upload): 180 s plus 20 s per billion parameters.
- `calibration`: the user's own finished jobs on the same instance type correct the table, as the ratio
  of their measured training-loop seconds (training seconds − start-up) to the seconds the table
  predicted for the same tokens, pooled (Σ measured ÷ Σ predicted) over at most the last 20 jobs.
  One ratio per instance type, applied to the loop, not to the start-up.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4.0
ASSUMED_PARAMS_B = 1.0
H100_1B_TOKENS_S = 29_700.0  # ENVIRONMENT.md: one H100, 1B LoRA, packed

_PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0, "V100": 125.0, "T4": 65.0}
_GPU_OF = {"p5": "H100", "p4d": "A100", "p4de": "A100", "g6e": "L40S", "g5": "A10G", "g6": "L4", "p3": "V100",
           "g4dn": "T4"}
_CPU_TOKENS_S_PER_VCPU = 8.0  # CPU-only LoRA on a 1B model: a few tokens/s per vCPU (a fallback, rarely used)
_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}
MAX_CALIBRATION_JOBS = 20


def throughput_1b(instance_type: str, gpus: int) -> float | None:
    """Tokens per second for LoRA on a 1B model on one instance of `instance_type` with `gpus` GPUs
    (None: a type the table cannot estimate, such as Trainium with this trainer)."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else ""
    size = instance_type.rsplit(".", 1)[-1]
    gpu = _GPU_OF.get(family)
    if gpu is not None:
        one = H100_1B_TOKENS_S * _PEAK_TFLOPS[gpu] / _PEAK_TFLOPS["H100"]
        n = max(gpus, 1)
        return one * (1 + 0.9 * (n - 1))
    if family in ("m5", "c5", "m6i", "c6i") and size in _VCPUS:
        return _CPU_TOKENS_S_PER_VCPU * _VCPUS[size]
    return None


def params_from_name(model: str) -> float | None:
    """The size in billions that a model's name states ("Qwen2.5-0.5B" -> 0.5, "opt-350m" -> 0.35)."""
    last = model.rstrip("/").rsplit("/", 1)[-1]
    found = re.findall(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])", last)
    if not found:
        return None
    number, unit = found[-1]
    value = float(number) / (1000.0 if unit.lower() == "m" else 1.0)
    return value if value > 0 else None


def startup_seconds(params_b: float) -> float:
    return 180.0 + 20.0 * params_b


@dataclass(frozen=True)
class Work:
    """What a training job will do: `tokens` of one pass over the train split (`counted`: "tokenizer"
    or "chars"), `epochs` passes, a model of `params_b` billions (`params_from`: "name", "config" or
    "assumed")."""

    tokens: int
    counted: str
    epochs: float
    params_b: float
    params_from: str

    @property
    def total_tokens(self) -> float:
        return self.tokens * self.epochs


@dataclass(frozen=True)
class Estimate:
    seconds: float  # start-up + loop, capped
    loop_seconds: float
    startup_seconds: float
    capped: bool
    calibration: float
    calibrated_from: int


def estimate_seconds(work: Work, instance_type: str, count: int, gpus: int, max_seconds: float | None, *,
                     calibration: float = 1.0, calibrated_from: int = 0) -> Estimate | None:
    rate = throughput_1b(instance_type, gpus)
    if rate is None:
        return None
    per_second = rate * max(count, 1) / max(work.params_b, 0.05)
    loop = work.total_tokens / per_second * calibration
    start = startup_seconds(work.params_b)
    total = start + loop
    capped = max_seconds is not None and total > max_seconds
    return Estimate(seconds=min(total, max_seconds) if capped and max_seconds is not None else total,
                    loop_seconds=loop, startup_seconds=start, capped=capped, calibration=calibration,
                    calibrated_from=calibrated_from)


def calibration(jobs: Iterable[Mapping[str, Any]], instance_type: str) -> tuple[float, int]:
    """(ratio, jobs used) from finished jobs' recorded estimates (`outputs.cost` of adapters): each has
    `instance_type`, `predicted_loop_s` (the table's loop seconds, before calibration) and
    `training_seconds`, `startup_s`. Jobs cut off by max_runtime say nothing about the rate and are left out."""
    used = [j for j in jobs if j.get("instance_type") == instance_type and j.get("predicted_loop_s")
            and j.get("training_seconds") and not j.get("capped")][-MAX_CALIBRATION_JOBS:]
    measured = sum(max(float(j["training_seconds"]) - float(j.get("startup_s") or 0.0), 1.0) for j in used)
    predicted = sum(float(j["predicted_loop_s"]) for j in used)
    if not used or predicted <= 0:
        return 1.0, 0
    return measured / predicted, len(used)
