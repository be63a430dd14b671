"""Per-document causal attention for packed rows, registered as a transformers attention function.

The model is loaded with `attn_implementation="fastuner_docs"`. A forward pass that passes
`fastuner_docs=Documents(...)` gets block-diagonal causal attention (no token attends to another
document); any other call (generation, padded batches) is plain SDPA with the usual masks. Backends:

- `varlen`: torch's FlashAttention varlen kernel (`torch.nn.attention.varlen`, CUDA, recent torch);
- `flex`: `flex_attention` with a document block mask (compiled, CUDA);
- `sdpa`: documents grouped by length into padded batches for SDPA with `is_causal` (any device; the
  padding sits after each document's end, so causality alone masks it for real queries).

On CUDA, `auto` takes the first backend that passes `self_check` (packed output and gradients equal
to each document alone) for the training dtype.
"""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F

from .packing import Documents

NAME = "fastuner_docs"
BACKENDS = ("varlen", "flex", "sdpa")
log = logging.getLogger("fastuner.train")


def register() -> None:
    """Idempotent. The mask function builds SDPA masks only when a padding mask is given, so packed
    training never materialises a T x T mask."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def documents_mask(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("attention_mask") is None:
            return None
        return sdpa_mask(*args, **kwargs)

    AttentionInterface.register(NAME, documents_attention)
    AttentionMaskInterface.register(NAME, documents_mask)


@torch.compiler.disable
def documents_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                        attention_mask: Any, dropout: float = 0.0, scaling: float | None = None,
                        fastuner_docs: Documents | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """query [1, H, T, D], key/value [1, Hkv, T, D] -> ([1, T, H, D], None), like transformers' SDPA."""
    if fastuner_docs is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if query.shape[0] != 1:
        raise ValueError("packed attention expects one flat row per batch")
    return packed_attention(query, key, value, fastuner_docs, scaling), None


def packed_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, docs: Documents,
                     scaling: float | None) -> torch.Tensor:
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if docs.backend == "varlen":
        return _varlen(query, key, value, docs, scaling)
    if docs.backend == "flex":
        return _flex(query, key, value, docs, scaling)
    return _sdpa_groups(query, key, value, docs, scaling)


# --- varlen ---------------------------------------------------------------------------------------

@functools.cache
def _varlen_fn() -> tuple[Any, set[str]]:
    from torch.nn.attention.varlen import varlen_attn

    return varlen_attn, set(inspect.signature(varlen_attn).parameters)


def _varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, docs: Documents,
            scaling: float) -> torch.Tensor:
    fn, params = _varlen_fn()
    q, k, v = (t[0].transpose(0, 1).contiguous() for t in (query, key, value))  # [T, H, D]
    kwargs: dict[str, Any] = {}
    if "scale" in params:
        kwargs["scale"] = scaling
    elif abs(scaling - q.shape[-1] ** -0.5) > 1e-12:  # early varlen_attn had no scale argument
        q = q * (scaling * q.shape[-1] ** 0.5)
    if "window_size" in params:
        kwargs["window_size"] = (-1, 0)
    else:
        kwargs["is_causal"] = True
    if k.shape[1] != q.shape[1]:
        if "enable_gqa" in params:
            kwargs["enable_gqa"] = True
        else:
            rep = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    cu = docs.cu_seqlens
    out = fn(q, k, v, cu, cu, docs.max_len, docs.max_len, **kwargs)
    return out.unsqueeze(0)


# --- flex -----------------------------------------------------------------------------------------

@functools.cache
def _compiled_flex() -> Any:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def _flex(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, docs: Documents,
          scaling: float) -> torch.Tensor:
    from torch.nn.attention.flex_attention import create_block_mask

    block_mask = docs.cache.get("block_mask")
    if block_mask is None:
        total = query.shape[2]
        lengths = torch.tensor(docs.lengths, device=query.device)
        doc_ids = torch.repeat_interleave(torch.arange(len(docs.lengths), device=query.device), lengths)

        def same_document_causal(b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            return (doc_ids[q_idx] == doc_ids[kv_idx]) & (q_idx >= kv_idx)

        extra = {"_compile": True} if "_compile" in inspect.signature(create_block_mask).parameters else {}
        block_mask = create_block_mask(same_document_causal, None, None, total, total, device=query.device,
                                       **extra)
        docs.cache["block_mask"] = block_mask
    out = _compiled_flex()(query, key, value, block_mask=block_mask, scale=scaling,
                           enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2)


# --- sdpa over length groups ----------------------------------------------------------------------

def _sdpa_plan(docs: Documents, device: torch.device) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Any]:
    plan = docs.cache.get("sdpa_plan")
    if plan is not None:
        return plan
    lengths = torch.tensor(docs.lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    bucket = torch.ceil(torch.log2(lengths.clamp(min=1).float())).long()
    groups = []
    order = []
    for b in torch.unique(bucket).tolist():
        members = (bucket == b).nonzero().squeeze(1)
        lens, begin = lengths[members], starts[members]
        width = int(lens.max())
        j = torch.arange(width)
        index = begin[:, None] + torch.minimum(j[None, :], lens[:, None] - 1)  # [n, L]
        valid = (j[None, :] < lens[:, None]).flatten().nonzero().squeeze(1)
        order.append(index.flatten()[valid])
        groups.append((index.to(device), valid.to(device)))
    order_t = torch.cat(order)
    inverse = None
    if not torch.equal(order_t, torch.arange(len(order_t))):
        inverse = torch.empty_like(order_t)
        inverse[order_t] = torch.arange(len(order_t))
        inverse = inverse.to(device)
    plan = (groups, inverse)
    docs.cache["sdpa_plan"] = plan
    return plan


def _sdpa_groups(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, docs: Documents,
                 scaling: float) -> torch.Tensor:
    groups, inverse = _sdpa_plan(docs, query.device)
    q, k, v = query[0], key[0], value[0]  # [H, T, D]
    gqa = k.shape[0] != q.shape[0]
    outs = []
    for index, valid in groups:
        n, width = index.shape
        qg, kg, vg = (t[:, index].transpose(0, 1) for t in (q, k, v))  # [n, H, L, D]
        if gqa:  # SDPA's enable_gqa is not on every torch; repeat the few KV heads instead
            rep = qg.shape[1] // kg.shape[1]
            kg, vg = kg.repeat_interleave(rep, dim=1), vg.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, scale=scaling)
        outs.append(out.transpose(1, 2).reshape(n * width, q.shape[0], q.shape[-1])[valid])
    out = torch.cat(outs) if len(outs) > 1 else outs[0]
    if inverse is not None:
        out = out[inverse]
    return out.unsqueeze(0)


# --- choosing a backend ---------------------------------------------------------------------------

def self_check(backend: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when `backend` gives each document of a packed row the same output and gradients as
    that document alone (reference: SDPA in fp32); otherwise the reason it does not."""
    try:
        gen = torch.Generator().manual_seed(0)
        lengths, heads, kv_heads, dim = [37, 130, 5, 64], 4, 2, 64
        total = sum(lengths)
        q, k, v = (torch.randn(1, h, total, dim, generator=gen) for h in (heads, kv_heads, kv_heads))
        grad = torch.randn(1, total, heads, dim, generator=gen)
        docs = Documents(lengths=lengths, backend=backend).to(device)
        inputs = [t.detach().to(device, dtype).requires_grad_() for t in (q, k, v)]
        out = packed_attention(*inputs, docs, None)
        out.backward(grad.to(device, dtype))
        ref_inputs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
        ref, start = [], 0
        for n in lengths:
            rq, rk, rv = (t[:, :, start:start + n] for t in ref_inputs)
            rep = heads // kv_heads
            o = F.scaled_dot_product_attention(rq, rk.repeat_interleave(rep, 1), rv.repeat_interleave(rep, 1),
                                               is_causal=True)
            ref.append(o.transpose(1, 2))
            start += n
        ref_out = torch.cat(ref, dim=1)
        ref_out.backward(grad)
        tol = 1e-4 if dtype == torch.float32 else 3e-2
        pairs = [("output", out, ref_out)] + [
            (f"grad {n}", a.grad, b.grad) for n, a, b in zip("qkv", inputs, ref_inputs, strict=True)
        ]
        for what, got, want in pairs:
            err = (got.float().cpu() - want).abs().max().item() / max(1.0, want.abs().max().item())
            if not err <= tol:
                return f"{what} differs from per-document attention by {err:.2e} (relative to its largest value)"
        return None
    except Exception as error:
        first = str(error).splitlines()[0][:200] if str(error) else ""
        return f"{type(error).__name__}: {first}"


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype) -> str:
    from .errors import TrainError

    if requested != "auto":
        problem = self_check(requested, device, dtype)
        if problem:
            raise TrainError(f"attention backend '{requested}' cannot run here: {problem}")
        return requested
    if device.type != "cuda":
        return "sdpa"
    for backend in BACKENDS:
        problem = self_check(backend, device, dtype)
        if problem is None:
            return backend
        log.warning("attention backend %s skipped: %s", backend, problem)
    raise TrainError("no per-document attention backend passed its self-check on this device")
