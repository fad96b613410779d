"""Reading what the Hessian code needs out of an optimizer, wrapped or not."""

from __future__ import annotations

from typing import Any

import torch


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside wrappers such as Accelerate's AcceleratedOptimizer (itself an
    Optimizer subclass, so the test is for a wrapped optimizer, not for the type)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


def is_adam(optimizer: Any) -> bool:
    """Adam and AdamW share the preconditioner diag(sqrt(v_hat) + eps)."""
    return isinstance(unwrap_optimizer(optimizer), (torch.optim.Adam, torch.optim.AdamW))


def group_lr(group: dict[str, Any]) -> float:
    lr = group["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
