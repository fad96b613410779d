"""ResNet-18 for 32x32 inputs (the CIFAR stem: a 3x3 stride-1 conv, no max-pool).

Batch norm and full-batch GD: a GD step accumulated over micro-batches normalises each
micro-batch with its own mean and variance, so the gradient equals the gradient of the mean
of per-micro-batch losses, not of one big batch (it depends on the micro-batch size and on
which images share a micro-batch). In train mode the running statistics update once per
micro-batch (momentum 0.1); evaluation uses the running statistics. Use a fixed micro-batch
size and order to keep a run reproducible.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from vision.models._hub import HubModule


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(HubModule):
    """BasicBlocks [2, 2, 2, 2] at widths (w, 2w, 4w, 8w); w=64 is the standard network."""

    model_type = "lmprobe-resnet"

    def __init__(self, n_classes: int = 10, width: int = 64, blocks: list[int] = (2, 2, 2, 2)):
        super().__init__()
        blocks = list(blocks)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out = width * 2**i
            for j in range(n):
                stages.append(BasicBlock(c_in, c_out, 2 if (i > 0 and j == 0) else 1))
                c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Linear(c_in, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(pixel_values))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
