"""The shipped CPU-scale models the claims are measured on, and the runs of a study."""

from __future__ import annotations

import os
from dataclasses import dataclass

from lmprobe.claims.runs import RunSpec


@dataclass(frozen=True)
class Model:
    name: str
    description: str
    script: str
    config: str
    quick: bool  # part of --quick (what runs in a few minutes on a 2-core CPU)
    uses_cifar: bool = False
    overrides: tuple[str, ...] = ()  # key=value on top of the config


MODELS = (
    Model("toy-linear", "two-layer linear network, opposing feature, GD", "cli/train_toy.py",
          "configs/toy/linear-opposing.yaml", quick=True),
    Model("toy-polynomial", "tanh MLP fitting a polynomial with outliers, squared loss, GD", "cli/train_toy.py",
          "configs/toy/polynomial.yaml", quick=True),
    Model("text-eos", "2-layer GPT-2, full-batch GD at lr 0.1", "cli/train_lm.py", "configs/lm/eos.yaml", quick=False),
    Model("cifar-cnn", "small CNN on 1,000 CIFAR-10 images, squared loss, GD", "cli/train_vision.py",
          "configs/vision/cifar-cnn-gd-eos.yaml", quick=False, uses_cifar=True),
    Model("vit", "2-layer ViT (width 32, patch 8) on 500 CIFAR-10 images, squared loss, GD", "cli/train_vision.py",
          "configs/vision/vit-cpu-gd.yaml", quick=False, uses_cifar=True),
    Model("vgg11-sgd", "VGG-11 at width 4 on 1,000 CIFAR-10 images, mini-batch SGD", "cli/train_vision.py",
          "configs/vision/vgg11-cpu-sgd.yaml", quick=False, uses_cifar=True),
    Model("resnet18", "ResNet-18 at width 8 on 100 CIFAR-10 images, GD", "cli/train_vision.py",
          "configs/vision/resnet18-cpu-gd.yaml", quick=False, uses_cifar=True),
)


def cifar_source(data: str | None) -> tuple[str, str | None]:
    """data.source for the CIFAR model and, when it falls back to synthetic images, why."""
    if data:
        return data, None
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return "synthetic", ("no --data and the Hub is offline: the CIFAR-10 CNN runs on the synthetic images "
                             "(pass --data PATH, a CIFAR-10 folder or archive, for real images)")
    return "cifar10", None


def study(models: list[Model], seeds: int, data: str | None) -> tuple[list[RunSpec], list[str]]:
    specs, notes = [], []
    for model in models:
        overrides = model.overrides
        if model.uses_cifar:
            source, note = cifar_source(data)
            overrides += (f"data.source={source}",)
            if note:
                notes.append(note)
        specs += [RunSpec(model.name, model.script, model.config, overrides, seed) for seed in range(seeds)]
    return specs, notes
