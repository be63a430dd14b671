"""Batches by token budget: packed rows of whole documents (causal LMs) or padded rows (classification).

A packed batch is one flat row `[1, T]` with `T <= batch_tokens`: documents are concatenated with no
padding at all, position ids restart at 0 in each document, and `Documents` carries the boundaries
(cu_seqlens) that the attention function uses to keep every document to itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .data import IGNORE, Example


def plan_packed_batches(lengths: list[int], batch_tokens: int, seed: int) -> list[list[int]]:
    """Shuffle (seeded), then fill rows in order up to `batch_tokens`; no document is ever split."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        if current and used + lengths[i] > batch_tokens:
            batches.append(current)
            current, used = [], 0
        current.append(i)
        used += lengths[i]
    if current:
        batches.append(current)
    return batches


def plan_padded_batches(lengths: list[int], batch_tokens: int, seed: int) -> list[list[int]]:
    """Rows of similar length (sorted inside shuffled pools) so that rows x longest <= batch_tokens."""
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    rng.shuffle(order)
    pool = 64
    batches: list[list[int]] = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start:start + pool], key=lambda i: lengths[i], reverse=True)
        current: list[int] = []
        for i in chunk:
            longest = max([lengths[j] for j in current] + [lengths[i]])
            if current and longest * (len(current) + 1) > batch_tokens:
                batches.append(current)
                current = []
            current.append(i)
        if current:
            batches.append(current)
    rng.shuffle(batches)
    return batches


@dataclass
class Documents:
    """Document boundaries of a packed row. Tensors are built lazily on the row's device and cached."""

    lengths: list[int]
    cu_seqlens: Any = None  # int32 [n + 1]
    max_len: int = 0
    backend: str = "sdpa"
    cache: dict[str, Any] = field(default_factory=dict)

    def to(self, device: Any) -> Documents:
        import torch

        cu = [0]
        for n in self.lengths:
            cu.append(cu[-1] + n)
        return Documents(
            lengths=self.lengths,
            cu_seqlens=torch.tensor(cu, dtype=torch.int32).to(device, non_blocking=True),
            max_len=max(self.lengths),
            backend=self.backend,
        )


@dataclass
class Batch:
    """One micro-batch. `targets`/`target_positions` index the flattened [B*T] hidden states."""

    input_ids: Any
    position_ids: Any = None
    attention_mask: Any = None
    documents: Documents | None = None
    target_positions: Any = None
    targets: Any = None
    labels: Any = None  # classification
    real_tokens: int = 0

    @property
    def n_targets(self) -> int:
        return int(self.targets.numel()) if self.targets is not None else int(self.labels.numel())

    def to(self, device: Any) -> Batch:
        def move(t: Any) -> Any:
            return t.to(device, non_blocking=True) if t is not None else None

        return Batch(
            input_ids=move(self.input_ids), position_ids=move(self.position_ids),
            attention_mask=move(self.attention_mask),
            documents=self.documents.to(device) if self.documents is not None else None,
            target_positions=move(self.target_positions), targets=move(self.targets),
            labels=move(self.labels), real_tokens=self.real_tokens,
        )


def collate_packed(examples: list[Example]) -> Batch:
    import torch

    ids: list[int] = []
    positions: list[int] = []
    labels: list[int] = []
    for ex in examples:
        ids.extend(ex.input_ids)
        positions.extend(range(len(ex)))
        labels.extend(ex.shift_labels)
    label_tensor = torch.tensor(labels, dtype=torch.long)
    where = (label_tensor != IGNORE).nonzero().squeeze(1)
    return Batch(
        input_ids=torch.tensor([ids], dtype=torch.long),
        position_ids=torch.tensor([positions], dtype=torch.long),
        documents=Documents(lengths=[len(ex) for ex in examples]),
        target_positions=where,
        targets=label_tensor[where],
        real_tokens=len(ids),
    )


def collate_padded(examples: list[Example], pad_id: int, *, causal: bool) -> Batch:
    """Right-padded rows with an attention mask (classification, or causal LM with packing off)."""
    import torch

    width = max(len(ex) for ex in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    shift = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, ex in enumerate(examples):
        ids[row, : len(ex)] = torch.tensor(ex.input_ids)
        mask[row, : len(ex)] = 1
        if causal:
            shift[row, : len(ex)] = torch.tensor(ex.shift_labels)
    batch = Batch(input_ids=ids, attention_mask=mask, real_tokens=int(mask.sum()))
    if causal:
        flat = shift.flatten()
        where = (flat != IGNORE).nonzero().squeeze(1)
        batch.target_positions, batch.targets = where, flat[where]
    else:
        batch.labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
    return batch
