"""The parts of a RunView that every domain shares: batches from probe/train_sample.npz."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lmprobe.run import Located
from lmprobe.train.task import Batch, ProbeSet
from lmprobe.train.train_sample import TrainSample, read_train_sample, rebatch


class RunViewBase:
    """Subclass and set `domain`, `groupings`; implement describe, key_label, load_model, loss."""

    domain: str = ""
    groupings: tuple[str, ...] = ("target",)

    def __init__(self, located: Located, checkpoint: Path, probe: ProbeSet, sample: TrainSample | None = None):
        self.located = located
        self.checkpoint = checkpoint
        self.probe = probe
        self._sample = sample

    @property
    def run_dir(self) -> Path | None:
        return self.located.run_dir

    def keys(self) -> dict[str, np.ndarray]:
        return self.probe.keys()

    def images(self, indices: Sequence[int]) -> np.ndarray | None:
        return None

    def sample(self) -> TrainSample:
        if self._sample is None:
            self._sample = read_train_sample(self.run_dir / "probe")
        return self._sample

    def hessian_batches(self, n_batches: int | None = None, batch_size: int | None = None) -> list[Batch]:
        return rebatch(self.sample().hessian, n_batches, batch_size, "sharpness")

    def train_batches(self, n_batches: int, batch_size: int) -> list[Batch]:
        return rebatch(self.sample().lookahead, n_batches, batch_size, "lookahead")
