"""The parts of a RunView that every domain shares: batches from probe/train_sample.npz."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from lmprobe.run import Located
from lmprobe.train.task import Batch, ProbeSet
from lmprobe.train.alignment import ALIGN_GROUPINGS, ALIGN_KEY, align_label, alignment_keys
from lmprobe.train.train_sample import TrainSample, read_train_sample, rebatch


class RunViewBase:
    """Subclass and set `domain`, `domain_groupings`; implement describe, domain_key_label,
    load_model and loss.

    A run that recorded alignment along the sharp direction (run_dir/alignment, see
    lmprobe.train.alignment) gets the key "align" and the groupings "align", "align-target"
    after the domain's own.
    """

    domain: str = ""
    domain_groupings: tuple[str, ...] = ("target",)

    @property
    def groupings(self) -> tuple[str, ...]:
        extra = ALIGN_GROUPINGS if ALIGN_KEY in self.keys() else ()
        return tuple(self.domain_groupings) + tuple(g for g in extra if g not in self.domain_groupings)

    def key_label(self, name: str, value: int) -> str:
        return align_label(value) if name == ALIGN_KEY else self.domain_key_label(name, value)

    def domain_key_label(self, name: str, value: int) -> str:
        return f"{name}={value}"

    def __init__(self, located: Located, checkpoint: Path | None, probe: ProbeSet, sample: TrainSample | None = None):
        self.located = located
        self._checkpoint = checkpoint
        self.probe = probe
        self._sample = sample

    @property
    def checkpoint(self) -> Path:
        """The checkpoint to analyse: the one given, else the run's latest, looked up only when
        needed (mining a recorded trace needs none, so a run whose checkpoints are gone still mines)."""
        return self._checkpoint if self._checkpoint is not None else self.located.analysed_checkpoint()

    @property
    def run_dir(self) -> Path | None:
        return self.located.run_dir

    def keys(self) -> dict[str, np.ndarray]:
        """The probe's keys, plus "align" (sign along the top eigenvector) when recorded."""
        if "_keys" not in self.__dict__:
            keys = dict(self.probe.keys())
            keys.update(alignment_keys(self.run_dir, self.probe.n_examples))
            self.__dict__["_keys"] = keys
        return dict(self.__dict__["_keys"])

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
