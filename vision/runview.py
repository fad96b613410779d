"""A vision run (or a lone saved classifier plus --data), as analysis sees it.

Everything comes from the run directory: the probe images (probe/images.npy), their keys and
class names (probe/meta.json), the training sample for Hessian and lookahead batches, the model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from lmprobe.analysis.view_base import RunViewBase, load_checkpoint_model
from lmprobe.errors import LmprobeError
from lmprobe.run import Located
from lmprobe.train.train_sample import TrainSample, hessian_indices, lookahead_indices
from vision.losses import image_loss
from vision.probe import ImageProbe

DATA_PROBE_IMAGES = 500  # images of --data's validation split used as the probe of a lone checkpoint


class VisionRunView(RunViewBase):
    domain = "vision"

    def __init__(self, located: Located, checkpoint: Path | None, probe: ImageProbe,
                 sample: TrainSample | None = None):
        super().__init__(located, checkpoint, probe, sample)
        extra = [k for k in ("feature", "border", "bright") if k in probe.extra_keys]
        self.domain_groupings = tuple(f"{k}-target" for k in extra) + ("target",)

    @classmethod
    def open_run(cls, located: Located) -> "VisionRunView":
        return cls(located, located.checkpoint, ImageProbe.load(located.run_dir / "probe"))

    @classmethod
    def open_checkpoint(cls, checkpoint: Path, data: str | None) -> "VisionRunView":
        if data is None:
            raise LmprobeError(f"{checkpoint} is not part of an lmprobe run, so it has no probe set; pass --data "
                               f"(synthetic, cifar10, or a folder/.tar.gz of class folders) to draw one")
        from vision.data import load_images

        images = load_images(data, n_train=DATA_PROBE_IMAGES, n_val=DATA_PROBE_IMAGES, seed=0)
        probe = ImageProbe.from_images(images, "val", None, "ce")

        def batches(indices: list[np.ndarray]) -> list[dict]:
            return [{"images": torch.from_numpy(images.train_x[i]),
                     "labels": torch.from_numpy(images.train_y[i].astype(np.int64))} for i in indices]

        n = len(images.train_y)
        sample = TrainSample(batches(hessian_indices(1, min(64, n), n)), batches(lookahead_indices(n, 0)))
        return cls(Located("checkpoint", None, checkpoint), checkpoint, probe, sample)

    # --- showing examples ------------------------------------------------------------------
    def describe(self, index: int) -> tuple[str, str]:
        probe = self.probe
        parts = [f"img {int(probe.ids[index])}"]
        if "feature" in probe.extra_keys:
            parts.append(self.domain_key_label("feature", int(probe.extra_keys["feature"][index])))
        return " ".join(parts), probe.class_names[int(probe.labels[index])]

    def domain_key_label(self, name: str, value: int) -> str:
        if name == "target":
            names = self.probe.class_names
            return names[value] if 0 <= value < len(names) else str(value)
        return self.probe.value_names.get(name, {}).get(int(value), f"{name}={value}")

    def images(self, indices: Sequence[int]) -> np.ndarray:
        return self.probe.images[np.asarray(indices, dtype=np.int64)]

    # --- the model and its loss ------------------------------------------------------------
    def load_model(self, checkpoint: Path) -> nn.Module:
        from vision.models import load_model, n_classes_of

        model = load_checkpoint_model(checkpoint, load_model)
        if n_classes_of(model) != len(self.probe.class_names):
            raise LmprobeError(f"{checkpoint} classifies {n_classes_of(model)} classes but the probe has "
                               f"{len(self.probe.class_names)}; pass --data with the classes it was trained on")
        return model.eval()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return image_loss(model, batch, self.probe.mean, self.probe.std, self.probe.loss_kind)

    def features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The penultimate layer: the input of the classifier head (the last nn.Linear of every arch:
        the flattened conv features, ResNet's pooled features, ViT's [CLS] state after its layer norm)."""
        from lmprobe.analysis.view_base import head_inputs
        from vision.data import normalize
        from vision.models import logits

        images = batch["images"]
        return head_inputs(model, lambda: logits(model, normalize(images, self.probe.mean, self.probe.std)
                                                 .to(images.device)))
