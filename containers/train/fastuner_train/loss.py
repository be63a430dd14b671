"""Cross-entropy on target tokens only, computed in chunks so full-vocabulary fp32 logits never exist.

The caller gathers the hidden states at target positions first (prompt tokens need no logits at all).
With a frozen `lm_head` (the LoRA case) the gradient w.r.t. the hidden states is computed chunk by
chunk during the forward pass and kept (`(softmax - onehot) @ W`), so peak memory is one chunk of
logits and the backward pass is a multiply. A trainable output layer falls back to checkpointed chunks.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def target_cross_entropy(hidden: torch.Tensor, lm_head: nn.Module, targets: torch.Tensor,
                         chunk_tokens: int = 4096) -> torch.Tensor:
    """Sum (not mean) of the cross-entropy of `targets` given `hidden` [N, d]; returns fp32 scalar."""
    if hidden.shape[0] == 0:
        return hidden.sum().float() * 0.0
    frozen_linear = type(lm_head) is nn.Linear and not any(p.requires_grad for p in lm_head.parameters())
    if frozen_linear:
        return _FrozenHeadCrossEntropy.apply(hidden, lm_head.weight, lm_head.bias, targets, chunk_tokens)
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, hidden.shape[0], chunk_tokens):
        h, t = hidden[start:start + chunk_tokens], targets[start:start + chunk_tokens]
        if torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(_chunk_loss, lm_head, h, t, use_reentrant=False)
        else:
            total = total + _chunk_loss(lm_head, h, t)
    return total


def _chunk_loss(lm_head: nn.Module, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(lm_head(hidden).float(), targets, reduction="sum")


def _softmax_grad(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum and d(loss)/d(logits) = softmax - onehot for one chunk: computed in fp32, the gradient
    returned in the logits' dtype (compiled, the casts fuse into one pass over the chunk)."""
    dtype = logits.dtype
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    picked = logits.gather(1, targets[:, None]).squeeze(1)
    grad = torch.exp(logits - lse[:, None])
    grad.scatter_add_(1, targets[:, None], grad.new_full((targets.shape[0], 1), -1.0))
    return (lse - picked).sum(), grad.to(dtype)


_compiled: dict[str, Any] = {}


def use_compiled_softmax_grad(enabled: bool) -> None:
    """Fuse the chunk's softmax/gradient elementwise work with torch.compile (GPU runs)."""
    if enabled and "fn" not in _compiled:
        _compiled["fn"] = torch.compile(_softmax_grad, dynamic=True)
    elif not enabled:
        _compiled.pop("fn", None)


class _FrozenHeadCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_tokens: int) -> torch.Tensor:
        softmax_grad = _compiled.get("fn", _softmax_grad)
        need_grad = ctx.needs_input_grad[0]
        grad_hidden = torch.empty_like(hidden) if need_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
        for start in range(0, hidden.shape[0], chunk_tokens):
            h = hidden[start:start + chunk_tokens]
            logits = h @ w.t()
            if bias is not None:
                logits = logits + bias.to(logits.dtype)
            loss, grad = softmax_grad(logits, targets[start:start + chunk_tokens])
            total += loss
            if need_grad:
                grad_hidden[start:start + chunk_tokens] = grad @ w
            del logits, grad
        ctx.save_for_backward(grad_hidden)
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[Any, ...]:
        (grad_hidden,) = ctx.saved_tensors
        return grad_hidden * grad_output.to(grad_hidden.dtype), None, None, None, None
