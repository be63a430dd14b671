"""The training step: loss of one micro-batch. train.py's loop and bench/train_throughput.py both call
exactly this code.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from .loss import target_cross_entropy
from .modeling import decoder_and_head, needs_full_logits
from .packing import Batch


def causal_lm_loss_sum(model: Any, batch: Batch, chunk_tokens: int = 4096) -> torch.Tensor:
    """Sum of target-token cross-entropy of a packed (or padded) batch, in fp32."""
    if needs_full_logits(model):
        return _full_logits_loss_sum(model, batch)
    decoder, lm_head = decoder_and_head(model)
    out = decoder(input_ids=batch.input_ids, position_ids=batch.position_ids,
                  attention_mask=batch.attention_mask, fastuner_docs=batch.documents, use_cache=False)
    hidden = out.last_hidden_state
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.target_positions)
    return target_cross_entropy(hidden, lm_head, batch.targets, chunk_tokens)


def _full_logits_loss_sum(model: Any, batch: Batch) -> torch.Tensor:
    logits = model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                   attention_mask=batch.attention_mask, fastuner_docs=batch.documents, use_cache=False).logits
    logits = logits.reshape(-1, logits.shape[-1]).index_select(0, batch.target_positions)
    return F.cross_entropy(logits.float(), batch.targets, reduction="sum")


def classification_outputs(model: Any, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of cross-entropy in fp32, logits [B, labels])."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits.float()
    return F.cross_entropy(logits, batch.labels, reduction="sum"), logits


def loss_sum(model: Any, batch: Batch, *, causal: bool, chunk_tokens: int = 4096) -> torch.Tensor:
    if causal:
        return causal_lm_loss_sum(model, batch, chunk_tokens)
    return classification_outputs(model, batch)[0]
