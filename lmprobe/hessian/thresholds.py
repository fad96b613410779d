"""Edge-of-stability thresholds: the sharpness beyond which an optimizer diverges on a quadratic.

On f(x) = lambda x^2 / 2 each optimizer is a linear recurrence; the threshold is the lambda at
which its spectral radius reaches 1 (an eigenvalue of the recurrence hits -1):

* gradient descent:          2 / lr
* heavy-ball momentum beta:  (2 + 2 beta) / lr   (torch SGD with dampening d: divide lr by 1 - d)
* Nesterov momentum beta:    (2 + 2 beta) / (lr (1 + 2 beta))
* Adam, for the preconditioned sharpness of P^-1 H with P frozen (Cohen et al. 2022):
  (2 + 2 beta1) / (lr (1 - beta1)), i.e. 38 / lr at beta1 = 0.9.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from lmprobe.hessian.optimizers import group_lr, is_adam, unwrap_optimizer


def gd_threshold(lr: float) -> float:
    return 2.0 / lr


def heavy_ball_threshold(lr: float, momentum: float, dampening: float = 0.0) -> float:
    return (2.0 + 2.0 * momentum) / (lr * (1.0 - dampening))


def nesterov_threshold(lr: float, momentum: float) -> float:
    return (2.0 + 2.0 * momentum) / (lr * (1.0 + 2.0 * momentum))


def adam_threshold(lr: float, beta1: float) -> float:
    return (2.0 + 2.0 * beta1) / (lr * (1.0 - beta1))


@dataclass(frozen=True)
class StabilityThreshold:
    """A threshold, the rule that produced it, and whether it applies to the preconditioned sharpness."""

    value: float
    rule: str
    preconditioned: bool = False


def optimizer_threshold(optimizer: Any, lr: float | None = None) -> StabilityThreshold | None:
    """The threshold for `optimizer` (SGD with or without momentum, Adam, AdamW); None for others.

    Hyperparameters come from the first parameter group; `lr` overrides its learning rate
    (e.g. the scheduled value at the step being measured).
    """
    optimizer = unwrap_optimizer(optimizer)
    group = optimizer.param_groups[0]
    lr = group_lr(group) if lr is None else lr
    if isinstance(optimizer, torch.optim.SGD):
        momentum = float(group.get("momentum", 0.0))
        if momentum == 0.0:
            return StabilityThreshold(gd_threshold(lr), "gd")
        if group.get("nesterov", False):
            return StabilityThreshold(nesterov_threshold(lr, momentum), "nesterov")
        dampening = float(group.get("dampening", 0.0))
        return StabilityThreshold(heavy_ball_threshold(lr, momentum, dampening), "heavy_ball")
    if is_adam(optimizer):
        return StabilityThreshold(adam_threshold(lr, float(group["betas"][0])), "adam", preconditioned=True)
    return None
