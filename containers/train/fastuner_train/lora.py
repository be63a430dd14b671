"""A lean forward for PEFT's plain LoRA `Linear` layers (one active adapter, not merged, no variant):

    y = base(x) + scaling * (dropout(x) @ A^T) @ B^T

PEFT first casts the input to the adapter's dtype (an fp32 copy of every activation when the base is
bf16 and the LoRA weights are fp32); here the matmuls take the input as it is (under autocast they run
in bf16 while the LoRA weights stay fp32 for the optimizer), dropout 0 is no copy at all, and the LoRA
product is accumulated into the base output by one `addmm` instead of a separate multiply and add.
Any other case (merged, disabled, several adapters, DoRA, extra arguments) goes to PEFT's own forward.
Only the instances of this model are changed; the saved adapter is untouched.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def streamline_lora(model: nn.Module) -> int:
    """Give every plain LoRA Linear of `model` the lean forward; returns how many."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if type(module) is LoraLinear and type(module.base_layer) is nn.Linear:
            module.forward = types.MethodType(_lean_forward, module)
            count += 1
    return count


def _lean_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = self.active_adapters
    name = active[0] if len(active) == 1 else None
    if (args or kwargs or self.disable_adapters or self.merged or name is None or name not in self.lora_A
            or name in getattr(self, "lora_variant", {}) or getattr(self, "use_dora", {}).get(name, False)):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    a, b = self.lora_A[name].weight, self.lora_B[name].weight
    if a.dtype != x.dtype and not torch.is_autocast_enabled(x.device.type):
        a, b = a.to(x.dtype), b.to(x.dtype)
    hidden = F.linear(self.lora_dropout[name](x), a)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), b.t(),
                      alpha=self.scaling[name])
    return out.view(result.shape)
