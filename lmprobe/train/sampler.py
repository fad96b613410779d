"""Which examples each step trains on: a pure function of (seed, step).

Because the batch of step s does not depend on any state carried between steps, a resumed run
sees exactly the batches an uninterrupted one would, and N processes see the same global batch
as one process, each taking its own contiguous slice of it.
"""

from __future__ import annotations

import numpy as np


class StepSampler:
    def __init__(self, n_examples: int, batch_size: int, seed: int, full_batch: int | None = None):
        if n_examples < 1:
            raise ValueError("cannot sample from an empty training set")
        self.n = n_examples
        self.batch_size = batch_size
        self.seed = seed
        self.full_batch = full_batch  # GD: always the same first `full_batch` examples
        self._epoch_cache: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._epoch_cache:
            self._epoch_cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._epoch_cache[epoch]

    def global_batch(self, step: int, micro: int, n_micro: int) -> np.ndarray:
        """Indices of micro-batch `micro` (of `n_micro`) of optimiser step `step`."""
        if self.full_batch is not None:
            start = micro * self.batch_size
            if start + self.batch_size > min(self.full_batch, self.n):
                raise ValueError(f"GD micro-batch {micro} would pass the end of the {self.n} training examples")
            return np.arange(start, start + self.batch_size)
        start = (step * n_micro + micro) * self.batch_size
        out = np.empty(self.batch_size, dtype=np.int64)
        filled = 0
        while filled < self.batch_size:
            epoch, offset = divmod(start + filled, self.n)
            take = min(self.batch_size - filled, self.n - offset)
            out[filled : filled + take] = self._permutation(epoch)[offset : offset + take]
            filled += take
        return out


def shard(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """This process's contiguous slice of a global batch (sizes must divide evenly)."""
    if len(indices) % world:
        raise ValueError(f"batch of {len(indices)} does not split evenly over {world} processes")
    per = len(indices) // world
    return indices[rank * per : (rank + 1) * per]
