"""The toy networks: a two-layer linear network and a small MLP, saved as safetensors + config.json.

config.json holds the constructor arguments and a "model_type" (lmprobe-toy-linear,
lmprobe-toy-mlp) by which a lone checkpoint is recognised. Loading is strict: a missing or extra
tensor is an error. Every model maps inputs [B, d] to predictions [B].
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from lmprobe.errors import LmprobeError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class ToyModule(nn.Module):
    model_type: ClassVar[str] = ""

    def __init__(self, **config):
        super().__init__()
        self.config = dict(config)

    def save_pretrained(self, folder: str | os.PathLike, state_dict: dict | None = None) -> None:
        import safetensors.torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        weights = state_dict if state_dict is not None else self.state_dict()
        safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()},
                                    str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        (folder / CONFIG_NAME).write_text(json.dumps({**self.config, "model_type": self.model_type},
                                                     sort_keys=True, indent=2))


class TwoLayerLinear(ToyModule):
    """f(x) = w2^T W1 x: the paper's two-layer linear network (no biases)."""

    model_type = "lmprobe-toy-linear"

    def __init__(self, n_inputs: int, width: int = 16, init_scale: float = 1.0):
        super().__init__(n_inputs=n_inputs, width=width, init_scale=init_scale)
        self.hidden = nn.Linear(n_inputs, width, bias=False)
        self.out = nn.Linear(width, 1, bias=False)
        with torch.no_grad():
            self.hidden.weight.normal_(0.0, init_scale / n_inputs ** 0.5)
            self.out.weight.normal_(0.0, init_scale / width ** 0.5)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(inputs)).squeeze(-1)


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ToyMLP(ToyModule):
    """`depth` hidden layers of `width` units (with biases and `activation`), then a linear output;
    with `batch_norm`, each hidden layer normalises its pre-activations over the batch (BatchNorm1d)."""

    model_type = "lmprobe-toy-mlp"

    def __init__(self, n_inputs: int, width: int = 32, depth: int = 2, activation: str = "tanh",
                 init_scale: float = 1.0, batch_norm: bool = False):
        config = dict(n_inputs=n_inputs, width=width, depth=depth, activation=activation, init_scale=init_scale)
        if batch_norm:  # only when on, so folders written before the option load unchanged
            config["batch_norm"] = True
        super().__init__(**config)
        if activation not in ACTIVATIONS:
            raise LmprobeError(f"unknown activation {activation!r}: use {', '.join(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        d = n_inputs
        for _ in range(depth):
            layers += [nn.Linear(d, width), *([nn.BatchNorm1d(width)] if batch_norm else []), ACTIVATIONS[activation]()]
            d = width
        layers.append(nn.Linear(d, 1))
        self.net = nn.Sequential(*layers)
        if init_scale != 1.0:
            with torch.no_grad():
                for p in self.net.parameters():
                    p.mul_(init_scale)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs).squeeze(-1)


MODEL_TYPES = {cls.model_type: cls for cls in (TwoLayerLinear, ToyMLP)}


def build_model(arch: str, n_inputs: int, width: int, depth: int, activation: str, init_scale: float,
                batch_norm: bool = False) -> ToyModule:
    """A fresh model (seed torch first for a reproducible init)."""
    if width < 1 or depth < 1:
        raise LmprobeError(f"model.width and model.depth must be at least 1 (got {width}, {depth})")
    if arch == "linear":
        if batch_norm:
            raise LmprobeError("model.batch_norm is for arch: mlp (the linear network has no hidden "
                               "nonlinearity to normalise before); set model.arch: mlp or batch_norm: false")
        return TwoLayerLinear(n_inputs, width, init_scale)
    return ToyMLP(n_inputs, width, depth, activation, init_scale, batch_norm)


def load_model(folder: str | os.PathLike) -> ToyModule:
    import safetensors.torch

    folder = Path(folder)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        raise LmprobeError(f"{folder} has no readable {CONFIG_NAME}; is it a toy model folder?") from None
    model_type = config.pop("model_type", None)
    if model_type not in MODEL_TYPES:
        raise LmprobeError(f"{folder} holds model_type {model_type!r}, not a toy model "
                           f"({', '.join(MODEL_TYPES)})")
    model = MODEL_TYPES[model_type](**config)
    safetensors.torch.load_model(model, str(folder / WEIGHTS_NAME), strict=True, device="cpu")
    return model
