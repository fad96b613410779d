"""The small networks of the edge-of-stability experiments (Cohen et al. 2021): CPU-scale.

No batch norm by default, so train and eval mode compute the same function and full-batch GD over
micro-batches equals one big batch exactly. The CNN's `batch_norm` (for the optimizer study)
normalises each conv's output over the batch; see vision.models for what that means under GD.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vision.models._hub import HubModule

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


def _activation(name: str) -> nn.Module:
    from lmprobe.errors import LmprobeError

    if name not in ACTIVATIONS:
        raise LmprobeError(f"unknown activation {name!r}: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MLP(HubModule):
    """Flatten -> `depth` hidden layers of `width` units -> linear head."""

    model_type = "lmprobe-mlp"

    def __init__(self, n_classes: int = 10, width: int = 200, depth: int = 2, activation: str = "tanh",
                 image_size: int = 32):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = 3 * image_size * image_size
        for _ in range(depth):
            layers += [nn.Linear(d_in, width), _activation(activation)]
            d_in = width
        layers.append(nn.Linear(d_in, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)


class SmallCNN(HubModule):
    """`depth` x (3x3 conv of `width` channels [-> batch norm] -> activation -> 2x2 max-pool) -> linear head."""

    model_type = "lmprobe-cnn"

    def __init__(self, n_classes: int = 10, width: int = 32, depth: int = 2, activation: str = "relu",
                 image_size: int = 32, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in, size = 3, image_size
        for _ in range(depth):
            norm = [nn.BatchNorm2d(width)] if batch_norm else []
            layers += [nn.Conv2d(c_in, width, 3, padding=1), *norm, _activation(activation), nn.MaxPool2d(2)]
            c_in, size = width, size // 2
        layers += [nn.Flatten(), nn.Linear(width * size * size, n_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values)
