"""How long a training job will run, from the work it does rather than from its `max_runtime`.

    seconds = start-up + tokens × epochs × FLOPs per token ÷ (peak × efficiency × GPUs) × calibration,
              capped by max_runtime

- `tokens`: the train split's tokens, counted by refresh with the base model's tokenizer when it loads
  offline from a local path, else estimated from characters (`CHARS_PER_TOKEN`, the usual rule for
  English text with BPE tokenizers); the plan says which.
- FLOPs per token for LoRA: 4 N (forward 2 N, backward through the frozen weights 2 N, no weight
  gradients), × 1.5 with gradient checkpointing (the forward runs twice), × `QLORA_FACTOR` for QLoRA
  (dequantising the 4-bit weights). N: the base model's parameters, from its config or its name
  ("7B"); 1B is assumed, and said, when neither tells.
- `PEAK_TFLOPS`: each GPU's dense bf16 tensor peak (fp16 for T4 and V100), by instance family; GPUs
  per instance from AWS's figures, 90 % scaling per extra GPU (data parallel).
- `efficiency(N)`: the share of that peak a LoRA run reaches, which grows with the model (small models
  spend more of their time outside the big matrix products). Fitted on published LoRA throughput:
  the Qwen README's profile on one A100-SXM4-80G (flash attention 2, gradient checkpointing) reaches
  34 % at 1.8B, 47 % at 7.7B and 53 % at 14B, so efficiency = 0.34 + 0.064 × log2(N / 1.8B), kept
  within [0.15, 0.55]. bench/cost_accuracy.py replays those figures and the others of its fixture.
- `startup_seconds`: what a job bills outside its training loop (container and data download,
  model weights, upload): 180 s plus 20 s per billion parameters.
- `calibration`: the user's own finished jobs on the same instance type correct the table, as the
  ratio of their measured loop seconds (training seconds − start-up) to the seconds the table
  predicted for the same work, pooled (Σ measured ÷ Σ predicted) over the last 20 such jobs. One ratio
  per instance type, applied to the loop, not to the start-up; a job cut off by max_runtime is left out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 4.0
ASSUMED_PARAMS_B = 1.0
QLORA_FACTOR = 1.35  # Qwen README, A100: Q-LoRA vs LoRA s/it at 2048 tokens, 7B 7.0/5.2, 14B 11.8/8.4
CHECKPOINTING_FACTOR = 1.5
SCALING = 0.9  # per extra GPU, data parallel
MAX_CALIBRATION_JOBS = 20

# dense bf16 tensor TFLOP/s of one GPU (fp16 for T4 and V100; NVIDIA's data sheets)
PEAK_TFLOPS = {"H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0, "V100": 125.0, "T4": 65.0}
GPU_OF = {"p5": "H100", "p4d": "A100", "p4de": "A100", "g6e": "L40S", "g5": "A10G", "g6": "L4", "p3": "V100",
          "g4dn": "T4"}
_CPU_TFLOPS_PER_VCPU = 0.05  # CPU-only training: a fallback, rarely sensible
_VCPUS = {"large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16}


def efficiency(params_b: float) -> float:
    """The share of a GPU's peak a LoRA run reaches for a model of `params_b` billions."""
    return min(0.55, max(0.15, 0.34 + 0.064 * math.log2(max(params_b, 0.01) / 1.8)))


def peak_tflops(instance_type: str, gpus: int) -> float | None:
    """The dense peak of one instance's GPUs, with the data-parallel scaling (None: a type the table
    cannot estimate, such as Trainium with this trainer)."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else ""
    size = instance_type.rsplit(".", 1)[-1]
    gpu = GPU_OF.get(family)
    if gpu is not None:
        n = max(gpus, 1)
        return PEAK_TFLOPS[gpu] * (1 + SCALING * (n - 1))
    if family in ("m5", "c5", "m6i", "c6i") and size in _VCPUS:
        return _CPU_TFLOPS_PER_VCPU * _VCPUS[size]
    return None


def flops_per_token(params_b: float, method: str = "lora", checkpointing: bool = False) -> float:
    return 4 * params_b * 1e9 * (CHECKPOINTING_FACTOR if checkpointing else 1.0) * \
        (QLORA_FACTOR if method == "qlora" else 1.0)


def tokens_per_second(instance_type: str, gpus: int, params_b: float, method: str = "lora",
                      checkpointing: bool = False) -> float | None:
    peak = peak_tflops(instance_type, gpus)
    if peak is None:
        return None
    return peak * 1e12 * efficiency(params_b) / flops_per_token(params_b, method, checkpointing)


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
    method: str = "lora"
    checkpointing: bool = False

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
    rate = tokens_per_second(instance_type, gpus, work.params_b, work.method, work.checkpointing)
    if rate is None:
        return None
    per_second = rate * max(count, 1)
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
