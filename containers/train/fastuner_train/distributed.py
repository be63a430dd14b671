"""Data parallelism without a DDP wrapper: every rank holds the same adapter, the gradients of the
trainable parameters are averaged with one all-reduce per optimizer step, and rank 0 alone writes.

Works under `torchrun` and SageMaker's `torch_distributed` launcher (they set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT). NCCL on GPUs, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def init_world() -> World:
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    if not dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available():
            backend = "nccl"
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # before NCCL picks a device
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    return World(rank=dist.get_rank(), size=dist.get_world_size(),
                 local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def close_world(world: World) -> None:
    if world.active and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_parameters(world: World, params: list[torch.Tensor]) -> None:
    """Rank 0's initial adapter (and head) everywhere, so every rank starts identical."""
    if world.active:
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(world: World, params: list[torch.Tensor]) -> None:
    if not world.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads])
    dist.all_reduce(flat)
    flat /= world.size
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset:offset + n].view_as(g).to(g.dtype)
        offset += n


def sum_tensor(world: World, values: torch.Tensor) -> torch.Tensor:
    if world.active:
        values = values.clone()
        dist.all_reduce(values)
    return values


def any_flag(world: World, flag: bool, device: torch.device) -> bool:
    if not world.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def gather_objects(world: World, obj: Any) -> list[Any]:
    if not world.active:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.active:
        dist.barrier()
