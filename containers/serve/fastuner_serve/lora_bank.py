"""Many LoRA adapters inside one base model, chosen per row of a batch.

Every targeted `nn.Linear` is wrapped by a `MultiLoraLinear` that holds the adapters of all cache slots;
every saved module (PEFT `modules_to_save`: a classification head, possibly with a different number of
labels per adapter) is wrapped by a `RoutedModule` that holds one copy per slot. Slot 0 is the base
model (no LoRA, the original module). `Routing` says which slot each row of the next forward uses.

Why not PEFT's own multi-adapter model: `set_adapter` walks every module (8 ms on MiniLM), a mixed batch
through `adapter_names` ran at half the speed of this bank (measured: 114 ms vs 58 ms for 8 rows, 8
adapters), and `modules_to_save` copies the base head, so heads of different sizes cannot coexist.

Exactness: when all rows use one slot (every generation step, most classification batches), a layer
computes `base(x) + lora_B(lora_A(x)) * scaling` with the adapter's own tensors, the same operations as
PEFT's `lora.Linear.forward` in eval mode. Mixed batches use a padded bank and `bmm`, equal to within
float rounding.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


class Routing:
    """The slot of every row of the next forward; set by the engine, read by every wrapped module."""

    def __init__(self) -> None:
        self.uniform: int | None = 0  # every row uses this slot
        self.slots: torch.Tensor | None = None  # per-row slots when they differ
        self.groups: list[tuple[int, torch.Tensor]] = []

    def set(self, slots: list[int], device: torch.device) -> None:
        if len(set(slots)) == 1:
            self.uniform, self.slots, self.groups = slots[0], None, []
            return
        self.uniform = None
        self.slots = torch.tensor(slots, device=device)
        self.groups = [(s, torch.tensor([i for i, x in enumerate(slots) if x == s], device=device))
                       for s in dict.fromkeys(slots)]


class MultiLoraLinear(nn.Module):
    def __init__(self, base: nn.Linear, routing: Routing, n_slots: int):
        super().__init__()
        self.base_layer = base
        self.routing = routing
        self.in_features, self.out_features = base.in_features, base.out_features
        self.n_slots = n_slots
        self.a: list[torch.Tensor | None] = [None] * n_slots
        self.b: list[torch.Tensor | None] = [None] * n_slots
        self.scaling = [0.0] * n_slots
        self.rank = 0
        # Mixed batches: (slots, in, rank) holding (A * scaling)^T and (slots, rank, out) holding B^T,
        # zero-padded to the largest rank, so that one bmm and one baddbmm serve every row.
        self.bank_a: torch.Tensor | None = None
        self.bank_b: torch.Tensor | None = None

    def write(self, slot: int, a: torch.Tensor, b: torch.Tensor, scaling: float) -> None:
        weight = self.base_layer.weight
        a = a.to(device=weight.device, dtype=weight.dtype).contiguous()
        b = b.to(device=weight.device, dtype=weight.dtype).contiguous()
        if a.shape[0] > self.rank or self.bank_a is None:
            self._grow(max(self.rank, a.shape[0]))
        self.a[slot], self.b[slot], self.scaling[slot] = a, b, float(scaling)
        r = a.shape[0]
        self.bank_a[slot].zero_()
        self.bank_b[slot].zero_()
        self.bank_a[slot, :, :r] = (a * scaling).t()
        self.bank_b[slot, :r] = b.t()

    def clear(self, slot: int) -> None:
        self.a[slot] = self.b[slot] = None
        self.scaling[slot] = 0.0
        if self.bank_a is not None:
            self.bank_a[slot].zero_()
            self.bank_b[slot].zero_()

    def _grow(self, rank: int) -> None:
        weight = self.base_layer.weight
        kw = {"device": weight.device, "dtype": weight.dtype}
        bank_a = torch.zeros(self.n_slots, self.in_features, rank, **kw)
        bank_b = torch.zeros(self.n_slots, rank, self.out_features, **kw)
        if self.bank_a is not None:
            bank_a[:, :, : self.rank] = self.bank_a
            bank_b[:, : self.rank] = self.bank_b
        self.bank_a, self.bank_b, self.rank = bank_a, bank_b, rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        slot = self.routing.uniform
        if slot is not None:
            a = self.a[slot]
            if a is None:
                return result
            return result + F.linear(F.linear(x, a), self.b[slot]) * self.scaling[slot]
        slots = self.routing.slots
        rows = x.shape[0]
        h = torch.bmm(x.reshape(rows, -1, self.in_features), self.bank_a.index_select(0, slots))
        out = torch.baddbmm(result.reshape(rows, -1, self.out_features), h, self.bank_b.index_select(0, slots))
        return out.view(result.shape)


class RoutedModule(nn.Module):
    """One copy of a saved module per slot; rows of slot s go through copy s (the original for 0).

    Copies may differ in output size (classification heads); a mixed batch pads the last dimension
    with zeros and the engine reads only each row's own outputs.
    """

    def __init__(self, original: nn.Module, routing: Routing):
        super().__init__()
        self.original = original
        self.routing = routing
        self.copies: dict[int, nn.Module] = {}

    def write(self, slot: int, state: dict[str, torch.Tensor]) -> None:
        self.copies[slot] = build_copy(self.original, state)

    def clear(self, slot: int) -> None:
        self.copies.pop(slot, None)

    def module_for(self, slot: int) -> nn.Module:
        return self.copies.get(slot, self.original)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.routing.uniform is not None:
            return self.module_for(self.routing.uniform)(x, *args, **kwargs)
        parts = [(rows, self.module_for(slot)(x.index_select(0, rows), *args, **kwargs))
                 for slot, rows in self.routing.groups]
        width = max(out.shape[-1] for _, out in parts)
        first = parts[0][1]
        result = first.new_zeros((x.shape[0], *first.shape[1:-1], width))
        for rows, out in parts:
            result[rows, ..., : out.shape[-1]] = out
        return result


def build_copy(original: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of `original` holding `state`; Linear layers are resized to the saved shapes."""
    clone = copy.deepcopy(original)
    weight = next(original.parameters())
    for name, tensor in state.items():
        module_path, _, param = name.rpartition(".")
        module = clone.get_submodule(module_path) if module_path else clone
        current = getattr(module, param, None)
        if current is not None and current.shape == tensor.shape:
            continue
        if not isinstance(module, nn.Linear) or param not in ("weight", "bias"):
            raise ValueError(f"saved {name} has shape {tuple(tensor.shape)}, the base has "
                             f"{None if current is None else tuple(current.shape)}")
        out_features = state.get(f"{module_path}.weight" if module_path else "weight", tensor).shape[0]
        resized = nn.Linear(module.in_features, out_features, bias=module.bias is not None,
                            device=weight.device, dtype=weight.dtype)
        if module_path:
            parent, _, child = module_path.rpartition(".")
            setattr(clone.get_submodule(parent) if parent else clone, child, resized)
        else:
            clone = resized
    missing, unexpected = clone.load_state_dict(
        {k: v.to(device=weight.device, dtype=weight.dtype) for k, v in state.items()}, strict=False)
    if missing or unexpected:
        raise ValueError(f"saved module does not fit: missing {missing}, unexpected {unexpected}")
    return clone.eval()


def install(model: nn.Module, path: str, wrapper: type[nn.Module], routing: Routing, *args) -> nn.Module:
    """Replace the module at `path` by `wrapper(module, routing, *args)` once; return the wrapper."""
    module = model.get_submodule(path)
    if isinstance(module, wrapper):
        return module
    wrapped = wrapper(module, routing, *args)
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, wrapped)
    return wrapped
