"""Image classification as a Task for the shared training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmprobe.errors import LmprobeError
from vision.config import MODEL_OPTIONS, VisionConfig
from vision.losses import image_eval_outputs, image_loss
from vision.probe import ImageProbe


class VisionTask:
    """A seeded image subset, a classifier from vision.models, and an image probe."""

    domain = "vision"
    unit = "images"

    def __init__(self, cfg: VisionConfig, data=None):
        """`data`: an ImageData to use instead of loading `cfg.data.source` (benchmarks, notebooks)."""
        from vision.data import load_images

        self.cfg = cfg
        self.data = data if data is not None else load_images(
            cfg.data.source, n_train=cfg.data.n_train, n_val=cfg.data.n_val, seed=cfg.train.seed,
            cache_dir=cfg.data.cache_dir)
        self.mean, self.std = tuple(self.data.mean), tuple(self.data.std)
        self.probe = ImageProbe.from_images(self.data, cfg.trace.split, cfg.trace.n_images, cfg.data.loss)

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        from vision.models import arch_options, build_model, load_model, n_classes_of

        m = self.cfg.model
        if m.init_from:
            model = load_model(m.init_from)
            if n_classes_of(model) != self.data.n_classes:
                raise LmprobeError(f"model.init_from has {n_classes_of(model)} classes, the data "
                                   f"{self.data.n_classes}; start from a model of the same classes")
            return model.train()
        options = {k: getattr(m, k) for k in MODEL_OPTIONS if getattr(m, k) is not None}
        unknown = sorted(set(options) - set(arch_options(m.arch)))
        if unknown:
            raise LmprobeError(f"model.{unknown[0]} does not apply to arch {m.arch} "
                               f"(it takes {', '.join(arch_options(m.arch))}); set it to null")
        return build_model(m.arch, self.data.n_classes, **options)

    def load_model(self, folder: Path) -> nn.Module:
        from vision.models import load_model

        return load_model(folder).train()

    def save_pretrained(self, model: nn.Module, folder: Path, state_dict: dict | None = None) -> None:
        from vision.models import save_model

        save_model(model, folder, state_dict)

    # --- data ------------------------------------------------------------------------------
    def n_train(self) -> int:
        return len(self.data.train_y)

    def n_val(self) -> int:
        return len(self.data.val_y)

    def units_per_example(self) -> int:
        return 1

    def train_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        images = torch.from_numpy(self.data.train_x[indices])
        if self.cfg.data.augment:
            from vision.data import augment

            # seeded by the examples drawn, so the batch of a step is the same after a resume
            seed = int(np.random.default_rng([self.cfg.train.seed, *np.asarray(indices).tolist()]).integers(2**62))
            images = augment(images, torch.Generator().manual_seed(seed))
        return {"images": images, "labels": torch.from_numpy(self.data.train_y[indices].astype(np.int64))}

    def val_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {"images": torch.from_numpy(self.data.val_x[indices]),
                "labels": torch.from_numpy(self.data.val_y[indices].astype(np.int64))}

    # --- losses ----------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return image_loss(model, batch, self.mean, self.std, self.cfg.data.loss)

    def eval_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return image_eval_outputs(model, batch, self.mean, self.std, self.cfg.data.loss)

    def eval_summary(self, outputs: np.ndarray) -> dict[str, float]:
        pairs = np.asarray(outputs, dtype=np.float64).reshape(-1, 2)
        return {"val_loss": float(pairs[:, 0].mean()), "val_acc": float(pairs[:, 1].mean())}

    def data_summary(self) -> dict[str, Any]:
        d = self.data
        return {
            "source": d.source, "n_train": self.n_train(), "n_val": self.n_val(), "classes": d.class_names,
            "train_class_counts": np.bincount(d.train_y, minlength=d.n_classes).tolist(),
            "probe_examples": self.probe.n_examples, "probe_split": self.probe.split,
            "planted": d.planted or None,
        }
