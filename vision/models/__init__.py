"""Image classifiers for 32x32 RGB inputs, one call to build, save, load and run each.

Archs: resnet18, vgg11, vgg11_bn (vision.models.resnet / vgg), vit (transformers' ViT),
mlp, cnn (the small edge-of-stability nets). Every model takes normalised float
`pixel_values` [B, 3, 32, 32]; `logits` returns [B, n_classes] for all of them.

`width` means each arch's natural width: first-stage channels (resnet18, vgg11*, cnn),
hidden units (mlp), hidden size (vit).

Batch norm (resnet18, vgg11_bn) under full-batch GD accumulated over micro-batches: each
micro-batch is normalised with its own mean and variance, so the accumulated gradient is
the gradient of the mean of per-micro-batch losses and depends on the micro-batch size and
composition (it is not the gradient of one big batch); in train mode the running statistics
update once per micro-batch (momentum 0.1), and eval mode uses them. mlp, cnn and vit have
no batch norm: for them accumulation equals one big batch exactly.

Saved folders hold model.safetensors + config.json; config.json's "model_type" says which
class loads it: lmprobe-resnet, lmprobe-vgg, lmprobe-mlp, lmprobe-cnn, or vit.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from lmprobe.errors import LmprobeError
from vision.models.resnet import ResNet18
from vision.models.small import MLP, SmallCNN
from vision.models.vgg import VGG11
from vision.models.vit import build_vit, load_vit, save_vit

ARCHS = ("resnet18", "vgg11", "vgg11_bn", "vit", "mlp", "cnn")
MODEL_TYPES = {cls.model_type: cls for cls in (ResNet18, VGG11, MLP, SmallCNN)}
VIT_MODEL_TYPE = "vit"

_BUILDERS = {
    "resnet18": (ResNet18, {}),
    "vgg11": (VGG11, {"batch_norm": False}),
    "vgg11_bn": (VGG11, {"batch_norm": True}),
    "vit": (build_vit, {}),
    "mlp": (MLP, {}),
    "cnn": (SmallCNN, {}),
}


def arch_options(arch: str) -> tuple[str, ...]:
    """The keyword options `build_model` accepts for arch (besides n_classes)."""
    builder, fixed = _builder(arch)
    names = inspect.signature(builder).parameters
    return tuple(n for n in names if n not in ("self", "n_classes") and n not in fixed)


def build_model(arch: str, n_classes: int, **options) -> nn.Module:
    """A freshly initialised model (seed torch first for a reproducible init)."""
    builder, fixed = _builder(arch)
    allowed = arch_options(arch)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise LmprobeError(f"model option(s) {', '.join(unknown)} not known for {arch}: "
                           f"use {', '.join(allowed)}")
    if int(n_classes) < 2:
        raise LmprobeError(f"n_classes must be at least 2, got {n_classes}")
    return builder(n_classes=int(n_classes), **fixed, **options)


def save_model(model: nn.Module, folder: str | os.PathLike, state_dict: dict | None = None) -> None:
    """model.safetensors + config.json (with model_type) in folder; `state_dict`, when given, is
    written instead of the model's own weights (the full weights of a sharded model)."""
    if getattr(getattr(model, "config", None), "model_type", None) == VIT_MODEL_TYPE:
        save_vit(model, str(folder), state_dict)
    else:
        model.save_pretrained(str(folder), state_dict=state_dict)


def load_model(folder: str | os.PathLike) -> nn.Module:
    """The model saved in folder, in eval mode, on CPU."""
    config_path = Path(folder) / "config.json"
    if not config_path.is_file():
        raise LmprobeError(f"no saved model in {folder}: expected config.json and model.safetensors there")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type == VIT_MODEL_TYPE:
        return load_vit(str(folder))
    if model_type not in MODEL_TYPES:
        known = ", ".join([*MODEL_TYPES, VIT_MODEL_TYPE])
        raise LmprobeError(f"{config_path} has model_type {model_type!r}; a vision model needs one of {known}")
    return MODEL_TYPES[model_type].from_pretrained(str(folder))


def logits(model: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """[B, n_classes] logits for any arch (the ViT returns an output object with .logits)."""
    out = model(pixel_values=pixel_values)
    return out if isinstance(out, torch.Tensor) else out.logits


def n_classes_of(model: nn.Module) -> int:
    """Number of output classes, read from the saved config of any arch."""
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "num_labels"):
        return int(config.num_labels)
    return int(model._hub_mixin_config["n_classes"])


def _builder(arch: str):
    if arch not in _BUILDERS:
        raise LmprobeError(f"unknown vision arch {arch!r}: use one of {', '.join(ARCHS)}")
    return _BUILDERS[arch]


__all__ = ["ARCHS", "MODEL_TYPES", "arch_options", "build_model", "load_model", "logits", "n_classes_of",
           "save_model"]
