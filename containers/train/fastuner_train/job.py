"""One training job from parsed settings to the adapter artifact."""

from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path
from typing import Any

from .settings import Hyperparameters, Paths

log = logging.getLogger("fastuner.train")


def run_job(hp: Hyperparameters, paths: Paths, progress: dict[str, str]) -> None:
    from .signals import StopFlag

    stop = StopFlag()
    stop.install()  # before anything slow, so an early SIGTERM is not fatal
    try:
        _run(hp, paths, progress, stop)
    finally:
        stop.restore()


def _run(hp: Hyperparameters, paths: Paths, progress: dict[str, str], stop: Any) -> None:
    from . import data
    from .logs import emit, route_library_logs, setup_logging

    setup_logging(int(os.environ.get("RANK", "0")))  # before any library is imported
    progress["phase"] = "reading the dataset"  # before torch is imported: bad data fails in milliseconds
    train = data.read_split("train", paths.train, hp.task, required=True)
    validation = data.read_split("validation", paths.validation, hp.task, required=False)
    test = data.read_split("test", paths.test, hp.task, required=False)
    others = [s for s in (validation, test) if s is not None]
    labels = data.resolve_labels(train, others, hp.labels) if not hp.is_causal_lm else None
    log.info("dataset: %s examples; importing torch and transformers", ", ".join(
        f"{len(s.records)} {s.name}" for s in (train, validation, test) if s is not None))

    import torch

    from . import artifact, attention, checkpoint, evaluation, loss, modeling
    from .distributed import broadcast_parameters, close_world, init_world
    from .loop import TrainData, Trainer, make_optimizer, make_schedule

    world = init_world()
    try:
        route_library_logs()
        runtime = modeling.pick_runtime(world.local_rank)
        random.seed(hp.seed)
        torch.manual_seed(hp.seed)

        progress["phase"] = "loading the base model"
        log.info("loading the tokenizer of %s", hp.base_model)
        name = modeling.resolve_base_model(hp.base_model)
        config = modeling.load_config(name, hp.base_model_revision)
        tokenizer = modeling.load_tokenizer(name, hp.base_model_revision)
        max_len = modeling.effective_max_seq_len(hp, config)
        kind = data.prompt_format(tokenizer)

        progress["phase"] = "tokenizing"
        log.info("tokenizing (max_seq_len %d)", max_len)
        stats = data.EncodeStats()

        def encode(split: data.Split | None) -> list[data.Example] | None:
            if split is None:
                return None
            if labels is not None:
                return data.encode_classification(split.records, tokenizer, labels, max_len, stats)
            return data.encode_causal(split.records, tokenizer, kind, max_len, stats)

        train_ex, val_ex, test_ex = encode(train), encode(validation), encode(test)
        if stats.truncated:
            total = sum(len(s.records) for s in (train, validation, test) if s is not None)
            log.warning("%d of %d examples are longer than max_seq_len (%d tokens) and were truncated; "
                        "raise training.max_seq_len to train on all of them", stats.truncated, total, max_len)

        progress["phase"] = "loading the base model"
        log.info("loading the base model %s", hp.base_model)
        model = modeling.load_model(hp, name, runtime, tokenizer, labels)
        model = modeling.add_adapter(model, hp)
        backend = "sdpa"
        if hp.is_causal_lm and hp.packing:
            backend = attention.choose_backend(hp.attention, runtime.device, runtime.dtype)
        use_compile = hp.compile == "true" or (
            hp.compile == "auto" and runtime.device.type == "cuda" and not hp.gradient_checkpointing
            and hp.method == "lora")
        if use_compile and hp.is_causal_lm:
            modeling.compile_layers(model)
            loss.use_compiled_softmax_grad(True)
        log.info("device %s, dtype %s, attention %s, compile %s, world size %d", runtime.device,
                 str(runtime.dtype).removeprefix("torch."), backend, use_compile, world.size)

        params = [p for p in model.parameters() if p.requires_grad]
        broadcast_parameters(world, params)
        pad_id = tokenizer.pad_token_id
        train_data = TrainData(train_ex, hp, world, pad_id, backend)
        schedule = make_schedule(train_data, hp)
        optimizer, scheduler = make_optimizer(params, hp, schedule, runtime)
        n_labels = len(labels) if labels else 0

        def batches(examples: list[data.Example] | None) -> list[Any] | None:
            if examples is None:
                return None
            return evaluation.eval_batches(examples, hp.batch_tokens, causal=hp.is_causal_lm, packing=hp.packing,
                                           pad_id=pad_id, world=world, backend=backend)

        trainer = Trainer(
            model=model, params=params, optimizer=optimizer, scheduler=scheduler, hp=hp, world=world,
            runtime=runtime, data=train_data, schedule=schedule, eval_batches=batches(val_ex),
            n_labels=n_labels, checkpoint_dir=paths.checkpoint_dir, fingerprint=_fingerprint(hp, world.size),
            stop=stop, progress=progress,
        )
        resumed = trainer.resume()
        test_batches = batches(test_ex)
        if not resumed and labels is not None and test_batches is not None:
            progress["phase"] = "evaluating the base model"
            log.info("evaluating the base model on %d test examples", len(test_ex or ()))
            base = evaluation.evaluate(model, test_batches, causal=False, n_labels=n_labels, world=world,
                                       runtime=runtime, chunk_tokens=hp.loss_chunk_tokens)
            trainer.state.base_metrics = {f"base_test_{k}": v for k, v in base.items()}
            if world.is_main:
                emit(0, schedule.total_steps, 0.0, **trainer.state.base_metrics)

        started = time.perf_counter()
        tokens_before = trainer.state.train_tokens
        state = trainer.run()
        elapsed = time.perf_counter() - started

        progress["phase"] = "final evaluation"
        if test_batches is not None:
            log.info("evaluating the adapter on %d test examples", len(test_ex or ()))
        if state.best_weights is not None:
            checkpoint.load_trainable_state(model, state.best_weights)
        metrics: dict[str, Any] = {
            "steps": state.step, "epochs": round(schedule.epoch_at(state.step), 4),
            "train_loss": next((h["train_loss"] for h in reversed(state.history) if "train_loss" in h), None),
            "best_eval_loss": state.best_eval_loss, "best_step": state.best_step,
            "train_tokens": state.train_tokens,
            "train_tokens_per_s": (state.train_tokens - tokens_before) / max(elapsed, 1e-9),
            "truncated_examples": stats.truncated, "max_seq_len": max_len, "attention": backend,
            "world_size": world.size, **state.base_metrics,
        }
        if test_batches is not None:
            test_metrics = evaluation.evaluate(model, test_batches, causal=hp.is_causal_lm, n_labels=n_labels,
                                               world=world, runtime=runtime, chunk_tokens=hp.loss_chunk_tokens)
            metrics.update({f"test_{k}": v for k, v in test_metrics.items()})
            if hp.is_causal_lm:
                metrics["test_exact_match"] = evaluation.exact_match(
                    model, tokenizer, test.records, kind, max_new_tokens=hp.max_new_tokens,
                    max_len=max_len, batch_tokens=hp.batch_tokens, world=world, runtime=runtime)
            if world.is_main:
                emit(state.step, schedule.total_steps, schedule.epoch_at(state.step),
                     **{k: v for k, v in metrics.items() if k.startswith("test_")})

        progress["phase"] = "saving the adapter"
        if world.is_main:
            description = artifact.describe(
                hp, labels=labels, prompt_format=kind, tokenizer_hash=data.tokenizer_hash(tokenizer),
                chat_template_hash=data.chat_template_hash(tokenizer), metrics=metrics)
            artifact.write_artifact(model, paths.model_dir, paths.output_data_dir, description)
            log.info("adapter saved to %s", paths.model_dir)
        _dump_rank_weights(model, world.rank)
    finally:
        close_world(world)


def _dump_rank_weights(model: Any, rank: int) -> None:
    """Debugging aid (and the data-parallel test): FASTUNER_TRAIN_DUMP_RANKS=DIR makes every rank write
    its final trainable weights to DIR/rank<N>.safetensors."""
    folder = os.environ.get("FASTUNER_TRAIN_DUMP_RANKS")
    if not folder:
        return
    from safetensors.torch import save_file

    from .checkpoint import trainable_state

    Path(folder).mkdir(parents=True, exist_ok=True)
    save_file(trainable_state(model), str(Path(folder) / f"rank{rank}.safetensors"))


def _fingerprint(hp: Hyperparameters, world_size: int) -> dict[str, Any]:
    """What must not change between a checkpoint and the job resuming from it."""
    keys = ("task", "base_model", "base_model_revision", "method", "lora_r", "lora_alpha", "target_modules",
            "epochs", "batch_tokens", "max_seq_len", "grad_accum", "seed", "labels", "packing", "max_steps")
    out: dict[str, Any] = {k: getattr(hp, k) for k in keys}
    out["world_size"] = world_size
    if not isinstance(out["target_modules"], str):
        out["target_modules"] = list(out["target_modules"])
    if out["labels"] is not None:
        out["labels"] = list(out["labels"])
    return out

