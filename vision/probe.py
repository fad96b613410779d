"""The fixed probe of a vision run: images, their labels and cheap keys, saved with the run.

Keys for the miner: "target" = the class label (what an opposing pair differs in), "feature" =
the planted feature (synthetic data) or the colour of the top rows (real images: sky), and for
real images "border" (a colour cluster of the outer ring) and "bright" (a luminance bin).
Probe losses are taken in eval mode (batch norm's running statistics), as for any probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmprobe.errors import LmprobeError
from vision.losses import image_losses

PROBE_FILE = "probe.npz"
IMAGES_FILE = "images.npy"
META_FILE = "meta.json"


@dataclass
class ImageProbe:
    ids: np.ndarray  # int64 [n] each image's id in its source
    images: np.ndarray  # uint8 [n, 32, 32, 3]
    labels: np.ndarray  # int64 [n]
    extra_keys: dict[str, np.ndarray]  # "feature", ... -> int64 [n]
    class_names: list[str]
    value_names: dict[str, dict[int, str]]  # key -> value -> label ("feature": {1: "sky"})
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    loss_kind: str = "ce"
    split: str = "train"

    @classmethod
    def from_images(cls, data, split: str, n_images: int | None, loss_kind: str) -> "ImageProbe":
        """The first `n_images` of a split (all when None), with their keys."""
        x, y, ids = (data.train_x, data.train_y, data.train_ids) if split == "train" else \
            (data.val_x, data.val_y, data.val_ids)
        n = len(x) if n_images is None else n_images
        if not 1 <= n <= len(x):
            raise LmprobeError(f"trace.n_images={n_images} but the {split} split has {len(x)} images; "
                               f"use at most {len(x)} (or null for all)")
        keys, names = image_keys(data, split)
        return cls(ids[:n].astype(np.int64), x[:n], y[:n].astype(np.int64),
                   {k: v[:n] for k, v in keys.items()}, list(data.class_names), names,
                   tuple(data.mean), tuple(data.std), loss_kind, split)

    @property
    def n_examples(self) -> int:
        return len(self.labels)

    def keys(self) -> dict[str, np.ndarray]:
        return {"target": self.labels, **self.extra_keys}

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_examples // batch_size)

    def batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rows = slice(index * batch_size, (index + 1) * batch_size)
        return {"images": torch.from_numpy(self.images[rows]), "labels": torch.from_numpy(self.labels[rows])}

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return image_losses(model, batch, self.mean, self.std, self.loss_kind)

    def save(self, probe_dir: str | Path) -> None:
        probe_dir = Path(probe_dir)
        probe_dir.mkdir(parents=True, exist_ok=True)
        np.savez(probe_dir / PROBE_FILE, ids=self.ids, **self.keys())
        np.save(probe_dir / IMAGES_FILE, self.images)
        meta = {"class_names": self.class_names, "mean": self.mean, "std": self.std, "loss": self.loss_kind,
                "split": self.split,
                "value_names": {k: {str(v): n for v, n in d.items()} for k, d in self.value_names.items()}}
        (probe_dir / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, probe_dir: str | Path) -> "ImageProbe":
        probe_dir = Path(probe_dir)
        if not (probe_dir / IMAGES_FILE).is_file():
            raise LmprobeError(f"{probe_dir} has no {IMAGES_FILE}; is this a vision run directory?")
        meta = json.loads((probe_dir / META_FILE).read_text())
        with np.load(probe_dir / PROBE_FILE) as z:
            arrays = {k: z[k] for k in z.files}
        ids, labels = arrays.pop("ids"), arrays.pop("target")
        return cls(ids, np.load(probe_dir / IMAGES_FILE), labels, arrays, meta["class_names"],
                   {k: {int(v): n for v, n in d.items()} for k, d in meta["value_names"].items()},
                   tuple(meta["mean"]), tuple(meta["std"]), meta["loss"], meta.get("split", "train"))


def image_keys(data, split: str) -> tuple[dict[str, np.ndarray], dict[str, dict[int, str]]]:
    """Planted features for synthetic data; colour/brightness features of the pixels otherwise."""
    feature = data.train_feature if split == "train" else data.val_feature
    if feature is not None:  # planted: 0 is "none", stored as -1 (no feature to share; see lmprobe.mining.opposing)
        names = {(-1 if v == 0 else v): n for v, n in data.feature_names.items()}
        return {"feature": np.where(feature == 0, -1, feature).astype(np.int64)}, {"feature": names}
    from vision.features import image_features

    fitted = image_features(data.train_x, seed=0)  # cluster centres fitted on the training images
    x = data.train_x if split == "train" else data.val_x
    found = image_features(x, border_centers=fitted.border_centers) if split != "train" else fitted
    keys = {"feature": found.keys["top"], "border": found.keys["border"], "bright": found.keys["bright"]}
    names = {"feature": found.names["top"], "border": found.names["border"], "bright": found.names["bright"]}
    return keys, names
