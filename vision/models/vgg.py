"""VGG-11 (configuration A) for 32x32 inputs, with or without batch norm.

After five 2x2 max-pools a 32x32 image is 1x1, so the classifier is one linear layer on the
8w channels (the usual CIFAR variant). Batch norm under GD accumulated over micro-batches:
see vision.models.resnet (each micro-batch normalises with its own statistics).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from vision.models._hub import HubModule

CFG_A = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")  # channels as multiples of width; M = max-pool


class VGG11(HubModule):
    """Channels 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M at width=64."""

    model_type = "lmprobe-vgg"

    def __init__(self, n_classes: int = 10, width: int = 64, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 3
        for item in CFG_A:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c_out = width * item
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU())
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c_in, n_classes)
        for m in self.modules():  # as torchvision: keeps the signal alive through 8 plain conv layers
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(pixel_values), 1))
