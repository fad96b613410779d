"""The little torch.distributed the Hessian code needs, a no-op when it is not initialised.

DDP's gradient hooks fire on `.backward()`, not on `torch.autograd.grad`, so Hessian-vector
products never rely on them: each process multiplies on its own shard of batches and the
results are combined with an explicit `all_reduce`. Models are unwrapped first so DDP's forward
bookkeeping is not triggered by measurement forwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank_and_world_size(group: dist.ProcessGroup | None = None) -> tuple[int, int]:
    """(rank, world size) in `group`; (0, 1) when torch.distributed is not initialised."""
    if not is_distributed():
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def all_reduce_sum(tensor: torch.Tensor, group: dist.ProcessGroup | None = None) -> torch.Tensor:
    """Sum `tensor` in place over all processes of `group` (identity in a single process)."""
    if rank_and_world_size(group)[1] > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def shard_batches(batches: Sequence[T], group: dist.ProcessGroup | None = None) -> list[T]:
    """This process's share of a list every process holds: batches[rank::world_size]."""
    rank, world_size = rank_and_world_size(group)
    return list(batches[rank::world_size])
