"""Image-classification losses on uint8 batches {"images": [B,32,32,3], "labels": [B]}.

Batches stay uint8 until the loss (4x less to move and to save in probe/train_sample.npz); the
loss normalises them with the run's channel statistics. "ce" is cross-entropy; "mse" is the
squared loss on one-hot targets, 0.5 * ||logits - onehot||^2 per image, as in the
edge-of-stability experiments.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _logits(model: nn.Module, batch: dict[str, torch.Tensor], mean: Sequence[float], std: Sequence[float]):
    from vision.data import normalize
    from vision.models import logits

    return logits(model, normalize(batch["images"], mean, std).to(batch["images"].device))


def per_image_loss(z: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "mse":
        return 0.5 * (z - F.one_hot(labels, z.shape[1]).float()).pow(2).sum(dim=1)
    return F.cross_entropy(z, labels, reduction="none")


def image_losses(model: nn.Module, batch: dict[str, torch.Tensor], mean, std, kind: str = "ce") -> torch.Tensor:
    """Per-image losses [B]."""
    return per_image_loss(_logits(model, batch, mean, std).float(), batch["labels"], kind)


def image_loss(model: nn.Module, batch: dict[str, torch.Tensor], mean, std, kind: str = "ce") -> torch.Tensor:
    """Mean loss of a batch (what training descends and Hessians are taken of)."""
    return image_losses(model, batch, mean, std, kind).mean()


def image_eval_outputs(model: nn.Module, batch: dict[str, torch.Tensor], mean, std, kind: str = "ce") -> torch.Tensor:
    """[B, 2]: each image's loss and whether its top class is right."""
    z = _logits(model, batch, mean, std).float()
    labels = batch["labels"]
    return torch.stack([per_image_loss(z, labels, kind), (z.argmax(dim=1) == labels).float()], dim=1)
