"""The in-memory image set every vision source produces (CIFAR-10 readers and the synthetic set).

Its own module so that the synthetic generator and the file readers both build on it without
importing each other.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SIZE = 32


@dataclass
class ImageData:
    """A train and a validation set of uint8 HWC images with labels and source ids."""

    train_x: np.ndarray  # uint8 [N, 32, 32, 3]
    train_y: np.ndarray  # int64 [N]
    val_x: np.ndarray
    val_y: np.ndarray
    class_names: list[str]
    train_ids: np.ndarray  # int64 [N]: the image's id in its source split
    val_ids: np.ndarray
    source: str  # what the images are, in words
    mean: tuple[float, float, float] = CIFAR10_MEAN  # per-channel statistics for `normalize`
    std: tuple[float, float, float] = CIFAR10_STD
    train_feature: np.ndarray | None = None  # int64 planted feature id per image (synthetic only)
    val_feature: np.ndarray | None = None
    feature_names: dict[int, str] = field(default_factory=dict)  # planted feature id -> name
    planted: dict = field(default_factory=dict)  # the known answer (vision.synthetic)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def save_npz(self, path: str | os.PathLike) -> None:
        """Written under a temporary name and renamed, so readers never see half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"class_names": self.class_names, "source": self.source, "mean": self.mean, "std": self.std,
                "feature_names": {str(k): v for k, v in self.feature_names.items()}, "planted": self.planted}
        arrays = {k: getattr(self, k) for k in ("train_x", "train_y", "val_x", "val_y", "train_ids", "val_ids")}
        for k in ("train_feature", "val_feature"):
            if getattr(self, k) is not None:
                arrays[k] = getattr(self, k)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".npz", dir=path.parent)
        os.close(fd)
        try:
            np.savez(tmp, meta=np.array(json.dumps(meta)), **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load_npz(cls, path: str | os.PathLike) -> "ImageData":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return cls(class_names=meta["class_names"], source=meta["source"], mean=tuple(meta["mean"]),
                   std=tuple(meta["std"]), feature_names={int(k): v for k, v in meta["feature_names"].items()},
                   planted=meta["planted"], **arrays)


def channel_stats(x_uint8: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 HWC images, on the 0..1 scale."""
    x = x_uint8.reshape(-1, 3).astype(np.float64) / 255.0
    return tuple(float(v) for v in x.mean(0)), tuple(float(v) for v in x.std(0))


def per_class_counts(n: int, n_classes: int) -> list[int]:
    """n split as evenly as possible: the first n % n_classes classes get one more."""
    return [n // n_classes + (1 if c < n % n_classes else 0) for c in range(n_classes)]
