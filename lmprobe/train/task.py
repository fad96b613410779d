"""What the training loop needs to know about a problem, and nothing more.

The loop is written once; a language model and a vision network differ only in the Task they
hand it. A batch is whatever `batch(indices)` returns; the loop only moves it to the device.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn


class Task(Protocol):
    #: what one training example is counted in for throughput ("tokens", "images")
    unit: str

    def build_model(self) -> nn.Module:
        """A fresh (or `init_from`) model, on the CPU, seeded by the caller."""

    def load_model(self, folder: Path) -> nn.Module:
        """The model saved by `save_pretrained` in `folder` (to resume from a checkpoint)."""

    def n_train(self) -> int:
        """Number of training examples the sampler draws indices from."""

    def units_per_example(self) -> int:
        """Tokens (or images) in one example, for throughput."""

    def train_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Collate training examples `indices` into a batch."""

    def val_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        """Collate validation examples `indices` into a batch."""

    def n_val(self) -> int:
        """Number of validation examples."""

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Scalar mean training loss of the batch (what gradients are taken of)."""

    def example_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-unit losses [batch, units] (per token, or [batch, 1] per image), for validation."""

    def n_probe_batches(self, batch_size: int) -> int:
        """How many batches the probe set is evaluated in."""

    def probe_batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        """The index-th batch of the fixed probe set."""

    def probe_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Flat losses of the probe examples in `batch`, in probe order."""

    def n_probe_examples(self) -> int:
        """Length of one trace row."""

    def save_probe(self, probe_dir: Path) -> None:
        """Write the probe examples and their keys (what analysis needs to show them)."""

    def save_pretrained(self, model: nn.Module, folder: Path) -> None:
        """Write the model (save_pretrained, safetensors) and any preprocessing it needs."""

    def describe(self) -> dict[str, Any]:
        """Facts about the data worth recording in the run directory (sizes, entropy, ...)."""
