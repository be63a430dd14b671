"""The training loop: token-budget micro-batches, gradient accumulation, one all-reduce per step,
evaluation each epoch (the best adapter by eval loss is kept), checkpoints every `checkpoint_every`
steps and on SIGTERM, resume from the newest checkpoint.

The data position is the step: an epoch's batches are a pure function of (seed, epoch, rank), so
step s is always micro-batches [s * grad_accum, (s + 1) * grad_accum) of epoch s // steps_per_epoch.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint, steps
from .checkpoint import TrainState
from .data import Example
from .distributed import World, any_flag, average_gradients, barrier, gather_objects, sum_tensor
from .errors import Terminated, TrainError
from .evaluation import evaluate
from .logs import emit
from .loss import use_compiled_softmax_grad
from .modeling import Runtime, decompile_layers, is_compile_error
from .packing import Batch, collate_packed, collate_padded, plan_packed_batches, plan_padded_batches
from .settings import Hyperparameters
from .signals import StopFlag

log = logging.getLogger("fastuner.train")


@dataclass
class Schedule:
    steps_per_epoch: int
    total_steps: int

    def epoch_at(self, step: int) -> float:
        return step / self.steps_per_epoch


@dataclass
class TrainData:
    """This rank's micro-batches, rebuilt once per epoch."""

    examples: list[Example]
    hp: Hyperparameters
    world: World
    pad_id: int
    backend: str
    _epoch: int = -1
    _plan: list[list[int]] = field(default_factory=list)

    @property
    def packed(self) -> bool:
        return self.hp.is_causal_lm and self.hp.packing

    def micro_batch_plan(self, epoch: int) -> list[list[int]]:
        if epoch != self._epoch:
            lengths = [len(e) for e in self.examples]
            plan_fn = plan_packed_batches if self.packed else plan_padded_batches
            batches = plan_fn(lengths, self.hp.batch_tokens, self.hp.seed + epoch)
            per_rank = math.ceil(len(batches) / self.world.size)
            self._plan = [batches[(i * self.world.size + self.world.rank) % len(batches)] for i in range(per_rank)]
            self._epoch = epoch
        return self._plan

    def batch(self, indices: list[int]) -> Batch:
        chosen = [self.examples[i] for i in indices]
        if self.packed:
            batch = collate_packed(chosen)
            batch.documents.backend = self.backend
            return batch
        return collate_padded(chosen, self.pad_id, causal=self.hp.is_causal_lm)


def make_schedule(data: TrainData, hp: Hyperparameters) -> Schedule:
    per_epoch = math.ceil(len(data.micro_batch_plan(0)) / hp.grad_accum)
    total = math.ceil(hp.epochs * per_epoch)
    if hp.max_steps is not None:
        total = min(total, hp.max_steps)
    return Schedule(per_epoch, max(total, 1))


def make_optimizer(params: list[torch.nn.Parameter], hp: Hyperparameters, schedule: Schedule,
                   runtime: Runtime) -> tuple[Any, Any]:
    fused = runtime.device.type == "cuda"
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, weight_decay=hp.weight_decay, fused=fused)
    warmup = int(hp.warmup_ratio * schedule.total_steps)
    total = schedule.total_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (total - step) / max(1, total - warmup))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def optimizer_step(model: Any, params: list[torch.nn.Parameter], optimizer: Any, scheduler: Any,
                   batches: list[Batch], *, runtime: Runtime, world: World, causal: bool,
                   chunk_tokens: int) -> torch.Tensor:
    """One optimizer step over this rank's micro-batches: the loss is the mean over the step's target
    tokens (or examples); returns [sum of losses, number of targets] (fp64, on device, no sync)."""
    n_targets = max(1, sum(b.n_targets for b in batches))
    stats = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    try:
        for batch in batches:
            batch = batch.to(runtime.device)
            with runtime.autocast_context():
                loss = steps.loss_sum(model, batch, causal=causal, chunk_tokens=chunk_tokens)
            (loss / n_targets).backward()
            stats[0] += loss.detach().double()
            stats[1] += batch.n_targets
    except Exception as error:
        # torch.compile is an optimisation: if it cannot handle this model here, train without it
        if not (is_compile_error(error) and decompile_layers(model)):
            raise
        log.warning("torch.compile failed, continuing without it: %s", str(error).splitlines()[0][:300])
        use_compiled_softmax_grad(False)
        optimizer.zero_grad(set_to_none=True)
        return optimizer_step(model, params, optimizer, scheduler, batches, runtime=runtime, world=world,
                              causal=causal, chunk_tokens=chunk_tokens)
    average_gradients(world, params)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return stats


@dataclass
class Trainer:
    model: Any
    params: list[torch.nn.Parameter]
    optimizer: Any
    scheduler: Any
    hp: Hyperparameters
    world: World
    runtime: Runtime
    data: TrainData
    schedule: Schedule
    eval_batches: list[Batch] | None
    n_labels: int
    checkpoint_dir: Path
    fingerprint: dict[str, Any]
    stop: StopFlag
    state: TrainState = field(default_factory=TrainState)
    progress: dict[str, str] = field(default_factory=dict)
    _pace_from: tuple[float, int] = (0.0, 0)  # (time, step) this process started training at

    def resume(self) -> bool:
        found = checkpoint.latest_checkpoint(self.checkpoint_dir)
        if found is None:
            return False
        self.state = checkpoint.load_checkpoint(found, self.model, self.optimizer, self.scheduler,
                                                self.world.rank, self.fingerprint)
        log.info("resumed from %s at step %d of %d", found, self.state.step, self.schedule.total_steps)
        return True

    def run(self) -> TrainState:
        hp, schedule, state = self.hp, self.schedule, self.state
        log_every = hp.log_every or max(1, schedule.total_steps // 100)
        log.info("training steps %d to %d (%d per epoch), logging every %d", state.step + 1,
                 schedule.total_steps, schedule.steps_per_epoch, log_every)
        self.model.train()
        self._pace_from = (time.perf_counter(), state.step)
        window_loss = torch.zeros(2, dtype=torch.float64, device=self.runtime.device)
        window_tokens, window_start = 0, time.perf_counter()
        while state.step < schedule.total_steps:
            self.progress["phase"] = f"step {state.step + 1}"
            epoch, within = divmod(state.step, schedule.steps_per_epoch)
            plan = self.data.micro_batch_plan(epoch)
            group = plan[within * hp.grad_accum:(within + 1) * hp.grad_accum]
            batches = [self.data.batch(indices) for indices in group]
            stats = optimizer_step(self.model, self.params, self.optimizer, self.scheduler, batches,
                                   runtime=self.runtime, world=self.world, causal=hp.is_causal_lm,
                                   chunk_tokens=hp.loss_chunk_tokens)
            window_loss += stats
            window_tokens += sum(b.real_tokens for b in batches)
            state.step += 1
            state.train_tokens += sum(b.real_tokens for b in batches)
            last = state.step == schedule.total_steps
            if state.step % log_every == 0 or last:
                window_loss = self._log_train(window_loss, window_tokens, window_start)
                window_tokens, window_start = 0, time.perf_counter()
            if state.step % schedule.steps_per_epoch == 0 or last:
                self.evaluate_and_keep_best()
            if any_flag(self.world, self.stop.set, self.runtime.device):
                path = self.save_checkpoint()
                raise Terminated(f"stopped by SIGTERM after step {state.step} of {schedule.total_steps}; "
                                 f"checkpoint saved to {path}; run the job again to resume")
            if state.step % hp.checkpoint_every == 0 and not last:
                self.save_checkpoint()
        return state

    def _log_train(self, window_loss: torch.Tensor, tokens: int, started: float) -> torch.Tensor:
        total = sum_tensor(self.world, window_loss)
        tokens_all = int(sum_tensor(self.world, torch.tensor([float(tokens)], device=self.runtime.device)).item())
        loss = float(total[0] / total[1].clamp(min=1))
        if not math.isfinite(loss):
            raise TrainError(f"training diverged: the loss is {loss} at step {self.state.step}; "
                             "lower learning_rate")
        now = time.perf_counter()
        elapsed = max(now - started, 1e-9)
        if self.world.is_main:
            emit(self.state.step, self.schedule.total_steps, self.schedule.epoch_at(self.state.step),
                 train_loss=loss, lr=float(self.scheduler.get_last_lr()[0]), tokens_per_s=tokens_all / elapsed,
                 eta_s=self._eta(now))
        self.state.history.append({"step": self.state.step, "train_loss": loss})
        return torch.zeros_like(window_loss)

    def _eta(self, now: float) -> float:
        """Seconds left at the pace of this run's steps so far (evaluations included)."""
        since, first = self._pace_from
        done = max(1, self.state.step - first)
        return (now - since) / done * (self.schedule.total_steps - self.state.step)

    def evaluate_and_keep_best(self) -> None:
        if self.eval_batches is None:
            return
        self.progress["phase"] = f"evaluation at step {self.state.step}"
        metrics = evaluate(self.model, self.eval_batches, causal=self.hp.is_causal_lm, n_labels=self.n_labels,
                           world=self.world, runtime=self.runtime, chunk_tokens=self.hp.loss_chunk_tokens)
        state = self.state
        if self.world.is_main:
            emit(state.step, self.schedule.total_steps, self.schedule.epoch_at(state.step),
                 eval_loss=metrics["loss"], eval_accuracy=metrics.get("accuracy"),
                 eval_macro_f1=metrics.get("macro_f1"))
        state.history.append({"step": state.step, **{f"eval_{k}": v for k, v in metrics.items()}})
        if state.best_eval_loss is None or metrics["loss"] < state.best_eval_loss:
            state.best_eval_loss, state.best_step = metrics["loss"], state.step
            state.best_weights = checkpoint.trainable_state(self.model)

    def save_checkpoint(self) -> Path:
        rngs = gather_objects(self.world, checkpoint.rng_state())
        path = self.checkpoint_dir / f"{checkpoint.PREFIX}{self.state.step:08d}"
        if self.world.is_main:
            path = checkpoint.save_checkpoint(self.checkpoint_dir, self.model, self.optimizer, self.scheduler,
                                              self.state, rngs, self.fingerprint)
            log.info("checkpoint saved: %s", path)
        barrier(self.world)
        return path
