"""Checkpoints for spot interruptions: the adapter's trainable weights, the best adapter so far, the
optimizer, the scheduler, every rank's RNG states and the data position (the step; batches are a
pure function of seed and epoch). Written to a temporary folder and renamed, so a checkpoint folder
either is complete (it has COMPLETE) or is ignored.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import TrainError

PREFIX = "step-"
KEEP = 2


@dataclass
class TrainState:
    """What the loop needs to continue exactly where it stopped."""

    step: int = 0
    best_eval_loss: float | None = None
    best_step: int | None = None
    best_weights: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    base_metrics: dict[str, float] = field(default_factory=dict)
    train_tokens: int = 0


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, weights: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in weights]
    if missing:
        raise TrainError(f"checkpoint does not match the model: it lacks {missing[0]}")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device, params[name].dtype))


def save_checkpoint(directory: Path, model: Any, optimizer: Any, scheduler: Any, state: TrainState,
                    rng_states: list[dict[str, Any]], fingerprint: dict[str, Any]) -> Path:
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{state.step:08d}"
    tmp = directory / f".tmp-{PREFIX}{state.step:08d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    if state.best_weights is not None:
        save_file(state.best_weights, str(tmp / "best.safetensors"))
    torch.save({
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_states,
        "fingerprint": fingerprint, "step": state.step, "best_eval_loss": state.best_eval_loss,
        "best_step": state.best_step, "history": state.history, "base_metrics": state.base_metrics,
        "train_tokens": state.train_tokens,
    }, tmp / "state.pt")
    (tmp / "COMPLETE").write_text(str(state.step))
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)
    for old in sorted(complete_checkpoints(directory))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def complete_checkpoints(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f"{PREFIX}*") if (p / "COMPLETE").is_file())


def latest_checkpoint(directory: Path) -> Path | None:
    found = complete_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any, rank: int,
                    fingerprint: dict[str, Any]) -> TrainState:
    from safetensors.torch import load_file

    saved = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    if saved["fingerprint"] != fingerprint:
        changed = sorted(k for k in fingerprint if saved["fingerprint"].get(k) != fingerprint[k])
        raise TrainError(f"checkpoint {path} belongs to a different job ({', '.join(changed)} changed): "
                         "use another checkpoint_dir or delete it")
    load_trainable_state(model, load_file(str(path / "trainable.safetensors")))
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    rngs = saved["rng"]
    set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    best = path / "best.safetensors"
    return TrainState(
        step=saved["step"], best_eval_loss=saved["best_eval_loss"], best_step=saved["best_step"],
        best_weights=load_file(str(best)) if best.is_file() else None, history=saved["history"],
        base_metrics=saved["base_metrics"], train_tokens=saved["train_tokens"],
    )
