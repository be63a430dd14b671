"""The one log line per step that the local executor and SageMaker metric definitions parse:
`[fastuner] step=12 total_steps=300 epoch=0.40 train_loss=1.2345 lr=2.0e-04 ...` (see
metric_definitions.json). Everything else goes to stderr through `logging`.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

PREFIX = "[fastuner]"


def format_value(key: str, value: Any) -> str:
    if isinstance(value, float):
        if key == "lr":
            return f"{value:.1e}"
        if key == "epoch":
            return f"{value:.2f}"
        if key.endswith(("tokens_per_s", "_s")):
            return f"{value:.1f}"
        return f"{value:.4f}"
    return str(value)


def format_line(step: int, total_steps: int, epoch: float, **pairs: Any) -> str:
    parts = [f"step={step}", f"total_steps={total_steps}", f"epoch={epoch:.2f}"]
    parts += [f"{key}={format_value(key, value)}" for key, value in pairs.items() if value is not None]
    return f"{PREFIX} " + " ".join(parts)


def emit(step: int, total_steps: int, epoch: float, **pairs: Any) -> None:
    print(format_line(step, total_steps, epoch, **pairs), flush=True)


def setup_logging(rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING, stream=sys.stderr,
        format=f"{PREFIX} %(levelname)s: %(message)s" if rank == 0 else f"{PREFIX} rank{rank} %(levelname)s: %(message)s",
    )
    for noisy in ("transformers", "peft", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
