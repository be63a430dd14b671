"""Evaluation: loss on a split, accuracy and macro-F1 for classification, exact match of greedy
generation for text_generation / qa. Every rank evaluates its share; sums are all-reduced.
"""

from __future__ import annotations

from typing import Any

import torch

from . import steps
from .data import Example, encode_prompt
from .distributed import World, sum_tensor
from .modeling import Runtime, uncompiled
from .packing import collate_packed, collate_padded, plan_packed_batches, plan_padded_batches


def eval_batches(examples: list[Example], batch_tokens: int, *, causal: bool, packing: bool, pad_id: int,
                 world: World, backend: str) -> list[Any]:
    lengths = [len(e) for e in examples]
    if causal and packing:
        plan = plan_packed_batches(lengths, batch_tokens, seed=0)
    else:
        plan = plan_padded_batches(lengths, batch_tokens, seed=0)
    out = []
    for indices in plan[world.rank::world.size]:
        chosen = [examples[i] for i in indices]
        if causal and packing:
            batch = collate_packed(chosen)
            batch.documents.backend = backend
        else:
            batch = collate_padded(chosen, pad_id, causal=causal)
        out.append(batch)
    return out


@torch.no_grad()
def evaluate(model: Any, batches: list[Any], *, causal: bool, n_labels: int, world: World, runtime: Runtime,
             chunk_tokens: int) -> dict[str, float]:
    """loss (mean per target token or per example); plus accuracy and macro_f1 for classification."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=runtime.device)
    confusion = torch.zeros((max(n_labels, 1), max(n_labels, 1)), dtype=torch.float64, device=runtime.device)
    for batch in batches:
        batch = batch.to(runtime.device)
        with runtime.autocast_context(), uncompiled(model):  # no second compilation for no_grad
            if causal:
                loss = steps.causal_lm_loss_sum(model, batch, chunk_tokens)
            else:
                loss, logits = steps.classification_outputs(model, batch)
                predicted = logits.argmax(-1)
                confusion.index_put_((batch.labels, predicted), torch.ones_like(predicted, dtype=torch.float64),
                                     accumulate=True)
        total += torch.stack([loss.double(), torch.tensor(float(batch.n_targets), dtype=torch.float64,
                                                            device=runtime.device)])
    total = sum_tensor(world, total)
    model.train(was_training)
    metrics = {"loss": float(total[0] / total[1].clamp(min=1))}
    if not causal:
        confusion = sum_tensor(world, confusion)
        metrics.update(confusion_metrics(confusion.cpu()))
    return metrics


def confusion_metrics(confusion: torch.Tensor) -> dict[str, float]:
    """accuracy and macro-F1 (mean over classes present in the truth or the predictions)."""
    count = float(confusion.sum())
    correct = float(confusion.diag().sum())
    tp = confusion.diag()
    predicted, actual = confusion.sum(0), confusion.sum(1)
    present = (predicted + actual) > 0
    f1 = torch.where(present, 2 * tp / (predicted + actual).clamp(min=1e-12), torch.zeros_like(tp))
    return {"accuracy": correct / max(count, 1.0),
            "macro_f1": float(f1[present].mean()) if bool(present.any()) else 0.0}


@torch.no_grad()
def exact_match(model: Any, tokenizer: Any, records: list[dict[str, str]], prompt_kind: str, *,
                max_new_tokens: int, max_len: int, batch_tokens: int, world: World,
                runtime: Runtime) -> float:
    """Greedy decoding; max_new_tokens is bounded by the longest target of the batch (+1 for EOS)."""
    mine = records[world.rank::world.size]
    target_lens = [len(tokenizer(r["target"], add_special_tokens=False)["input_ids"]) + 1 for r in mine]
    # the prompt keeps its end, and leaves room for the answer inside the model's length
    prompts = [encode_prompt(tokenizer, r["input"], prompt_kind)[-max(1, max_len - min(n, max_new_tokens)):]
               for r, n in zip(mine, target_lens, strict=True)]
    order = sorted(range(len(mine)), key=lambda i: (len(prompts[i]), target_lens[i]))
    was_training = model.training
    model.eval()
    hits = 0
    start = 0
    with uncompiled(model):
        while start < len(order):
            rows: list[int] = []
            for i in order[start:]:
                chosen = [*rows, i]
                width = max(len(prompts[j]) for j in chosen) + min(max_new_tokens,
                                                                    max(target_lens[j] for j in chosen))
                if rows and (width * len(chosen) > batch_tokens or len(chosen) > 64):
                    break
                rows.append(i)
            start += len(rows)
            new = min(max_new_tokens, max(target_lens[i] for i in rows))
            hits += _generate_batch(model, tokenizer, [prompts[i] for i in rows], [mine[i]["target"] for i in rows],
                                    new, runtime)
    model.train(was_training)
    total = sum_tensor(world, torch.tensor([float(hits), float(len(mine))], device=runtime.device))
    return float(total[0] / total[1].clamp(min=1))


def _generate_batch(model: Any, tokenizer: Any, prompts: list[list[int]], targets: list[str], new_tokens: int,
                    runtime: Runtime) -> int:
    width = max(len(p) for p in prompts)
    pad = tokenizer.pad_token_id
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt):] = torch.tensor(prompt)
        mask[row, width - len(prompt):] = 1
    with runtime.autocast_context():
        out = model.generate(input_ids=ids.to(runtime.device), attention_mask=mask.to(runtime.device),
                             max_new_tokens=new_tokens, do_sample=False, pad_token_id=pad,
                             eos_token_id=tokenizer.eos_token_id)
    hits = 0
    for row, target in enumerate(targets):
        text = tokenizer.decode(out[row, width:], skip_special_tokens=True)
        hits += int(text.strip() == target.strip())
    return hits
