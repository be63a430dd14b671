"""Training throughput: plain transformers + PEFT vs fastuner's training step, in one process.

    python bench/train_throughput.py            # GPU: Llama-3.2-1B shape, random weights, bf16
    python bench/train_throughput.py --tiny     # CPU-sized model (automatic when there is no CUDA)

Variants, all LoRA r=16 / alpha 32 on every linear layer, loss on target tokens only (the prompt is
masked), AdamW, gradient clipping at 1.0, the same documents:
  a  plain transformers + PEFT, dynamic padding, batches of 4 documents (HF loss, SDPA)
  b  plain transformers + PEFT, documents concatenated into 4 x 2048 rows, no per-document masking
     (attention leaks across documents; standard HF loss over full-vocabulary logits)
  c  fastuner's training step, imported from containers/train (loop.optimizer_step, the code train.py
     runs): packed rows of `batch_tokens` with per-document attention (varlen / flex / SDPA groups,
     self-checked), target-only chunked cross-entropy, the lean LoRA forward, torch.compile of the
     decoder layers on CUDA; LoRA dropout 0 (the program's default is 0.05: see c_dropout_0.05)
  c_* extra runs of c (no compile, dropout 0.05, a larger batch) when the time budget allows

Throughput counts real (non-pad) tokens. Model FLOPs per real token (useful work, the same formula
for every variant, so TFLOP/s is proportional to tokens/s):
  6 * N_total + 6 * L * d_attn * n_doc      (tflops_6n; fwd + bwd, causal attention within the document)
  4 * N_total + 6 * L * d_attn * n_doc      (tflops_4n; LoRA computes no gradient for frozen weights;
                                             ENVIRONMENT.md's reference TFLOP/s figures match this one)
N_total counts every parameter once (tied embeddings once, LoRA included), n_doc is the document's
length. The last line is one JSON object with every number.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "containers" / "train"))

import torch  # noqa: E402

IGNORE = -100


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    median_len: int
    max_len: int
    row_len: int  # (b)'s row length; 4 rows per batch


GPU_SHAPE = Shape(2048, 16, 32, 8, 8192, 128256, 300, 2048, 2048)
TINY_SHAPE = Shape(64, 2, 4, 2, 256, 1024, 24, 128, 128)


@dataclass(frozen=True)
class Doc:
    ids: list[int]
    prompt_len: int


def make_docs(shape: Shape, n: int, seed: int = 0) -> list[Doc]:
    """Instruction-like: lognormal lengths (median `median_len`, sigma 0.8, clipped to [16, max_len]);
    the prompt takes a uniform 20-80 % of each document, the rest is the target (+ EOS)."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        length = int(min(shape.max_len, max(16, rng.lognormvariate(math.log(shape.median_len), 0.8))))
        prompt = max(1, int(length * rng.uniform(0.2, 0.8)))
        docs.append(Doc([rng.randrange(3, shape.vocab) for _ in range(length)], prompt))
    return docs


def build_base(shape: Shape, device: torch.device, dtype: torch.dtype) -> Any:
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        max_position_embeddings=max(4096, shape.max_len), tie_word_embeddings=True, rope_theta=500000.0,
        bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    torch.manual_seed(0)
    with torch.device(device):
        try:
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa", dtype=dtype)
        except TypeError:  # a transformers without the `dtype` argument
            model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").to(dtype)
    model.requires_grad_(False)
    return model


def count_params(model: Any) -> int:
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def flops_per_doc(shape: Shape, n_params: int, n: int, params_factor: int) -> float:
    return params_factor * n_params * n + 6 * shape.layers * (shape.heads * (shape.hidden // shape.heads)) * n * n


# --- plain transformers + PEFT baselines ----------------------------------------------------------

def plain_peft(base: Any, dropout: float) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(r=16, lora_alpha=32, lora_dropout=dropout, target_modules="all-linear", bias="none",
                        task_type=TaskType.CAUSAL_LM)
    return get_peft_model(base, config)


def padded_batches(docs: list[Doc], limit: int, size: int = 4) -> list[tuple[dict[str, torch.Tensor], int]]:
    out = []
    for start in range(0, min(len(docs), limit * size) - size + 1, size):
        group = docs[start:start + size]
        width = max(len(d.ids) for d in group)
        ids = torch.zeros((size, width), dtype=torch.long)
        mask = torch.zeros((size, width), dtype=torch.long)
        labels = torch.full((size, width), IGNORE, dtype=torch.long)
        for row, d in enumerate(group):
            ids[row, :len(d.ids)] = torch.tensor(d.ids)
            mask[row, :len(d.ids)] = 1
            labels[row, d.prompt_len:len(d.ids)] = torch.tensor(d.ids[d.prompt_len:])
        out.append(({"input_ids": ids, "attention_mask": mask, "labels": labels}, sum(len(d.ids) for d in group)))
    return out


def concatenated_batches(docs: list[Doc], row_len: int, limit: int,
                         rows: int = 4) -> list[tuple[dict[str, torch.Tensor], int]]:
    """Documents back to back, cut into rows of `row_len` (a document may continue on the next row)."""
    ids: list[int] = []
    labels: list[int] = []
    for d in docs:
        ids += d.ids
        labels += [IGNORE] * d.prompt_len + d.ids[d.prompt_len:]
    per_batch = row_len * rows
    out = []
    for start in range(0, min(len(ids), limit * per_batch) - per_batch + 1, per_batch):
        chunk = torch.tensor(ids[start:start + per_batch]).view(rows, row_len)
        lab = torch.tensor(labels[start:start + per_batch]).view(rows, row_len)
        out.append(({"input_ids": chunk, "labels": lab}, per_batch))
    return out


def run_plain(model: Any, batches: list[tuple[dict[str, torch.Tensor], int]], device: torch.device,
              autocast: bool, warmup: int, steps: int) -> tuple[float, int, float]:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    model.train()

    def step(batch: dict[str, torch.Tensor]) -> float:
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    return timed(step, batches, device, warmup, steps)


def timed(step: Any, batches: list[tuple[Any, int]], device: torch.device, warmup: int,
          steps: int) -> tuple[float, int, float]:
    """(seconds, real tokens, last loss) over `steps` steps after `warmup` steps."""
    if len(batches) < warmup + steps:
        raise RuntimeError(f"only {len(batches)} batches for {warmup} + {steps} steps")
    for batch, _ in batches[:warmup]:
        step(batch)
    sync(device)
    started = time.perf_counter()
    tokens = 0
    loss = None
    for batch, real in batches[warmup:warmup + steps]:
        loss = step(batch)
        tokens += real
    sync(device)
    return time.perf_counter() - started, tokens, float(loss)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --- fastuner's step --------------------------------------------------------------------------------

def fastuner_model(base: Any, *, dropout: float, compile_layers: bool, device: torch.device,
                   dtype: torch.dtype) -> tuple[Any, str]:
    from fastuner_train import attention, loss, modeling
    from fastuner_train.settings import make_hyperparameters

    hp = make_hyperparameters({"task": "text_generation", "base_model": "bench", "lora_dropout": dropout})
    attention.register()
    try:
        base.set_attn_implementation(attention.NAME)
    except Exception:  # older transformers: set it on the (shared) config directly
        base.config._attn_implementation = attention.NAME
    model = modeling.add_adapter(base, hp)
    backend = attention.choose_backend("auto", device, dtype)
    if compile_layers:
        modeling.compile_layers(model)
    loss.use_compiled_softmax_grad(compile_layers)
    return model, backend


def fastuner_batches(docs: list[Doc], batch_tokens: int, backend: str, limit: int) -> list[tuple[Any, int]]:
    from fastuner_train.data import Example
    from fastuner_train.packing import collate_packed, plan_packed_batches

    examples = [Example(tuple(d.ids), shift_labels=tuple([IGNORE] * (d.prompt_len - 1) + d.ids[d.prompt_len:]
                                                         + [IGNORE])) for d in docs]
    plan = plan_packed_batches([len(e) for e in examples], batch_tokens, seed=0)
    out = []
    for indices in plan[:-1][:limit]:  # the last row is a remainder
        batch = collate_packed([examples[i] for i in indices])
        batch.documents.backend = backend
        out.append((batch, batch.real_tokens))
    return out


def run_fastuner(model: Any, batches: list[tuple[Any, int]], device: torch.device, dtype: torch.dtype,
                 warmup: int, steps: int) -> tuple[float, int, float]:
    from fastuner_train.distributed import World
    from fastuner_train.loop import Schedule, make_optimizer, optimizer_step
    from fastuner_train.modeling import Runtime
    from fastuner_train.settings import make_hyperparameters

    hp = make_hyperparameters({"task": "text_generation", "base_model": "bench", "learning_rate": 1e-4})
    runtime = Runtime(device, dtype, device.type == "cuda")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(params, hp, Schedule(1, 10_000), runtime)
    model.train()

    def step(batch: Any) -> torch.Tensor:
        stats = optimizer_step(model, params, optimizer, scheduler, [batch], runtime=runtime, world=World(),
                               causal=True, chunk_tokens=hp.loss_chunk_tokens)
        return stats[0] / stats[1]

    return timed(step, batches, device, warmup, steps)


def masking_check(model: Any, docs: list[Doc], backend: str, device: torch.device, dtype: torch.dtype) -> float:
    """Largest |per-token loss packed - alone| over three documents, through the program's own path."""
    import torch.nn.functional as F
    from fastuner_train import modeling
    from fastuner_train.data import Example
    from fastuner_train.packing import collate_packed

    examples = [Example(tuple(d.ids), shift_labels=tuple([IGNORE] * (d.prompt_len - 1) + d.ids[d.prompt_len:]
                                                         + [IGNORE])) for d in docs[:3]]
    decoder, head = modeling.decoder_and_head(model)

    def losses(exs: list[Example]) -> torch.Tensor:
        batch = collate_packed(exs)
        batch.documents.backend = backend
        batch = batch.to(device)
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=device.type == "cuda"):
            hidden = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                             fastuner_docs=batch.documents, use_cache=False).last_hidden_state[0]
            logits = head(hidden[batch.target_positions]).float()
        return F.cross_entropy(logits, batch.targets, reduction="none")

    with modeling.uncompiled(model):
        packed = losses(examples)
        alone = torch.cat([losses([e]) for e in examples])
    return float((packed - alone).abs().max())


# --- driver -----------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="CPU-sized model (automatic without CUDA)")
    parser.add_argument("--quick", action="store_true", help="fewer steps, no extra c runs")
    parser.add_argument("--budget-s", type=float, default=480, help="skip what would start after this many s")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per variant")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="c's batch_tokens (GPU)")
    parser.add_argument("--variants", default="a,b,c", help="comma-separated subset of a,b,c")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    tiny = args.tiny or not cuda
    device = torch.device("cuda" if cuda else "cpu")
    shape = TINY_SHAPE if tiny else GPU_SHAPE
    dtype = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    steps = args.steps or (3 if tiny else (6 if args.quick else 12))
    warmup = 2 if tiny else 3
    batch_tokens = 512 if tiny else args.batch_tokens
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    docs_needed = (warmup + steps + 2) * max(batch_tokens, 4 * shape.row_len) // shape.median_len * 2 + 64
    docs = make_docs(shape, docs_needed)
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
            "tiny": tiny, "dtype": str(dtype).removeprefix("torch."), "steps": steps, "warmup": warmup,
            "batch_tokens": batch_tokens,
            "shape": shape.__dict__, "docs": len(docs), "mean_doc_len": sum(len(d.ids) for d in docs) / len(docs)}
    import peft
    import transformers

    info.update(transformers=transformers.__version__, peft=peft.__version__)
    print(f"# {json.dumps(info)}", flush=True)
    results: dict[str, dict[str, Any]] = {}
    try:
        run_variants(args, info, results, docs, shape, device, dtype, started)
    except Exception as error:  # a failure outside the variants (building the model): still report
        traceback.print_exc()
        info["fatal"] = f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"
    ratios = {}
    rate = {k: v.get("tokens_per_s") for k, v in results.items()}
    if rate.get("c_fastuner") and rate.get("b_packed_4x2048"):
        ratios["c_over_b"] = rate["c_fastuner"] / rate["b_packed_4x2048"]
    if rate.get("b_packed_4x2048") and rate.get("a_padded_bs4"):
        ratios["b_over_a"] = rate["b_packed_4x2048"] / rate["a_padded_bs4"]
    print_table(results, ratios)
    print(json.dumps({"bench": "train_throughput", **info, "results": results, "ratios": ratios,
                      "total_s": time.perf_counter() - started}), flush=True)
    return 0 if "fatal" not in info else 1


def run_variants(args: argparse.Namespace, info: dict[str, Any], results: dict[str, dict[str, Any]],
                 docs: list[Doc], shape: Shape, device: torch.device, dtype: torch.dtype, started: float) -> None:
    cuda = device.type == "cuda"
    tiny = info["tiny"]
    steps, warmup = info["steps"], info["warmup"]
    autocast = dtype == torch.bfloat16
    batch_tokens = info["batch_tokens"]
    wanted = set(args.variants.split(","))
    base = build_base(shape, device, dtype)

    def record(name: str, fn: Any, n_params: int) -> None:
        if time.perf_counter() - started > args.budget_s:
            results[name] = {"error": "skipped: time budget"}
            return
        if cuda:
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            seconds, tokens, loss, extra = fn()
        except Exception as error:  # report and go on with the next variant
            traceback.print_exc()
            results[name] = {"error": f"{type(error).__name__}: {str(error).splitlines()[0][:300] if str(error) else ''}"}
            print(f"# {name}: {results[name]['error']}", flush=True)
            return
        doc_lengths = [len(d.ids) for d in docs]
        per_token = {factor: sum(flops_per_doc(shape, n_params, n, factor) for n in doc_lengths) / sum(doc_lengths)
                     for factor in (6, 4)}
        rate = tokens / seconds
        results[name] = {
            "tokens_per_s": rate, "tflops_6n": rate * per_token[6] / 1e12, "tflops_4n": rate * per_token[4] / 1e12,
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None, "loss": loss,
            "timed_tokens": tokens, "seconds": seconds, "wall_s": time.perf_counter() - t0, **extra,
        }
        print(f"# {name}: {json.dumps(results[name])}", flush=True)

    n_params_plain = 0
    if {"a", "b"} & wanted:
        model = plain_peft(base, dropout=0.05)
        n_params_plain = count_params(model)
        if "a" in wanted:
            padded = padded_batches(docs, warmup + steps)
            record("a_padded_bs4", lambda: (*run_plain(model, padded, device, autocast, warmup, steps), {}),
                   n_params_plain)
        if "b" in wanted:
            rows = concatenated_batches(docs, shape.row_len, warmup + steps)
            record("b_packed_4x2048", lambda: (*run_plain(model, rows, device, autocast, warmup, steps), {}),
                   n_params_plain)
        base = model.unload()
        del model

    if "c" in wanted:
        runs = [("c_fastuner", {"dropout": 0.0, "compile": cuda, "batch_tokens": batch_tokens})]
        if not args.quick and not tiny:
            runs += [("c_no_compile", {"dropout": 0.0, "compile": False, "batch_tokens": batch_tokens}),
                     ("c_dropout_0.05", {"dropout": 0.05, "compile": True, "batch_tokens": batch_tokens}),
                     ("c_batch_2x", {"dropout": 0.0, "compile": True, "batch_tokens": 2 * batch_tokens})]
        for name, cfg in runs:
            first = results.get("c_fastuner", {}).get("wall_s")
            if name != "c_fastuner" and first and time.perf_counter() - started + first > args.budget_s:
                results[name] = {"error": "skipped: time budget"}
                continue
            holder: dict[str, Any] = {}

            def run_c(cfg: dict[str, Any] = cfg, holder: dict[str, Any] = holder,
                      base: Any = base) -> tuple[float, int, float, dict]:
                model, backend = fastuner_model(base, dropout=cfg["dropout"], compile_layers=cfg["compile"],
                                                device=device, dtype=dtype)
                holder["model"] = model
                check = masking_check(model, docs, backend, device, dtype)
                batches = fastuner_batches(docs, cfg["batch_tokens"], backend, warmup + steps)
                seconds, tokens, loss = run_fastuner(model, batches, device, dtype, warmup, steps)
                still_compiled = any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())
                return seconds, tokens, loss, {"attention": backend, "compile": cfg["compile"] and still_compiled,
                                               "lora_dropout": cfg["dropout"], "batch_tokens": cfg["batch_tokens"],
                                               "masking_check_max_abs_diff": check}

            record(name, run_c, n_params_plain or count_params(base) + lora_param_count(base))
            model = holder.pop("model", None)
            if model is not None:
                base = model.unload()
                del model
            for module in base.modules():  # undo compile_layers for the next run
                if getattr(module, "_compiled_call_impl", None) is not None:
                    module._compiled_call_impl = None
            torch._dynamo.reset()


def lora_param_count(base: Any) -> int:
    """LoRA r=16 on every linear layer of the decoder (what plain_peft adds), for c-only runs."""
    total = 0
    for name, module in base.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head"):
            total += 16 * (module.in_features + module.out_features)
    return total


def print_table(results: dict[str, dict[str, Any]], ratios: dict[str, float]) -> None:
    print()
    print(f"{'variant':<18} {'tokens/s':>10} {'TFLOP/s 6N':>11} {'TFLOP/s 4N':>11} {'peak GiB':>9}  notes")
    for name, r in results.items():
        if "error" in r:
            print(f"{name:<18} {'-':>10} {'-':>11} {'-':>11} {'-':>9}  {r['error']}")
            continue
        mem = f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] is not None else "-"
        notes = ""
        if "attention" in r:
            notes = (f"attention={r['attention']} compile={r['compile']} dropout={r['lora_dropout']} "
                     f"batch_tokens={r['batch_tokens']} mask_check={r['masking_check_max_abs_diff']:.1e}")
        print(f"{name:<18} {r['tokens_per_s']:>10.0f} {r['tflops_6n']:>11.3g} {r['tflops_4n']:>11.3g} {mem:>9}  {notes}")
    for key, value in ratios.items():
        print(f"{key}: {value:.2f}x")
    print()


if __name__ == "__main__":
    sys.exit(main())
