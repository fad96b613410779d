"""The square loss of the toy problems on batches {"inputs": [B, d], "targets": [B]}."""

from __future__ import annotations

import torch
from torch import nn


def example_losses(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """0.5 * (f(x) - y)^2 per example, [B]."""
    return 0.5 * (model(batch["inputs"]).float() - batch["targets"].float()).pow(2)


def mean_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The training loss: the mean of the per-example square losses."""
    return example_losses(model, batch).mean()
