"""A toy problem as a Task for the shared training loop (full-batch GD by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toy.config import ToyConfig
from toy.data import ToyData, make_data
from toy.losses import example_losses, mean_loss
from toy.probe import ToyProbe


class ToyTask:
    """The data model of `cfg.data`, the network of `cfg.model`, and every training example as the probe."""

    domain = "toy"
    unit = "examples"

    def __init__(self, cfg: ToyConfig, data: ToyData | None = None):
        self.cfg = cfg
        self.data = data if data is not None else make_data(cfg.data, cfg.train.seed)
        self.probe = ToyProbe.from_data(self.data, cfg.trace.n_examples)

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from toy.models import build_model

        m = self.cfg.model
        return build_model(m.arch, self.data.n_inputs, m.width, m.depth, m.activation, m.init_scale, m.batch_norm)

    def load_model(self, folder: Path) -> nn.Module:
        from toy.models import load_model

        return load_model(folder).train()

    def save_pretrained(self, model: nn.Module, folder: Path, state_dict: dict | None = None) -> None:
        model.save_pretrained(folder, state_dict=state_dict)

    # --- data ------------------------------------------------------------------------------
    def n_train(self) -> int:
        return len(self.data.train.y)

    def n_val(self) -> int:
        return len(self.data.val.y)

    def units_per_example(self) -> int:
        return 1

    def train_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        split = self.data.train
        return {"inputs": torch.from_numpy(split.x[indices]), "targets": torch.from_numpy(split.y[indices])}

    def val_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        split = self.data.val
        return {"inputs": torch.from_numpy(split.x[indices]), "targets": torch.from_numpy(split.y[indices])}

    # --- losses ----------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_loss(model, batch)

    def eval_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return example_losses(model, batch)[:, None]

    def eval_summary(self, outputs: np.ndarray) -> dict[str, float]:
        return {"val_loss": float(np.asarray(outputs, dtype=np.float64).mean())}

    def data_summary(self) -> dict[str, Any]:
        return {**self.data.summary(), "probe_examples": self.probe.n_examples}
