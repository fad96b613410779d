"""The fixed probe set of a language-model run: token positions in held-out sequences.

An example is one (context, next token) pair: sequence `seq`, target at `position`. Its keys
are what the miner groups by: the target token and the last context token (the input feature),
plus the token before that for longer suffixes. Keys use -1 where a position has no such token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmprobe.errors import LmprobeError

PROBE_FILE = "probe.npz"


@dataclass
class TextProbe:
    sequences: np.ndarray  # int32 [n_seq, block_size]
    seq_index: np.ndarray  # int32 [n] sequence of each example
    position: np.ndarray  # int32 [n] target position within its sequence (>= 1)

    @classmethod
    def choose(
        cls, val_blocks: np.ndarray, n_sequences: int, positions_per_sequence: int | None, seed: int
    ) -> "TextProbe":
        """Seeded choice of validation sequences and, optionally, positions within them."""
        rng = np.random.default_rng([seed, 0x9E0B])
        n_seq = min(n_sequences, len(val_blocks))
        rows = np.sort(rng.choice(len(val_blocks), size=n_seq, replace=False))
        sequences = np.ascontiguousarray(val_blocks[rows], dtype=np.int32)
        block = sequences.shape[1]
        all_positions = np.arange(1, block, dtype=np.int32)
        seq_index, position = [], []
        for s in range(n_seq):
            if positions_per_sequence is None or positions_per_sequence >= len(all_positions):
                chosen = all_positions
            else:
                chosen = np.sort(rng.choice(all_positions, size=positions_per_sequence, replace=False))
            seq_index.append(np.full(len(chosen), s, dtype=np.int32))
            position.append(chosen)
        return cls(sequences, np.concatenate(seq_index), np.concatenate(position))

    @property
    def n_examples(self) -> int:
        return len(self.position)

    def keys(self) -> dict[str, np.ndarray]:
        """Per-example integer keys for the miner: target, feature (last context token), feature2."""
        seq = self.sequences[self.seq_index]
        rows = np.arange(len(self.position))
        target = seq[rows, self.position]
        feature = seq[rows, self.position - 1]
        feature2 = np.where(self.position >= 2, seq[rows, np.maximum(self.position - 2, 0)], -1)
        return {"target": target.astype(np.int64), "feature": feature.astype(np.int64),
                "feature2": feature2.astype(np.int64)}

    def loss_mask(self) -> np.ndarray:
        """bool [n_seq, block_size - 1]: which next-token losses are probe examples."""
        mask = np.zeros((len(self.sequences), self.sequences.shape[1] - 1), dtype=bool)
        mask[self.seq_index, self.position - 1] = True
        return mask

    def context(self, example: int, max_tokens: int = 12) -> tuple[np.ndarray, int]:
        """(context token ids ending just before the target, target id) of one example."""
        seq = self.sequences[self.seq_index[example]]
        pos = int(self.position[example])
        return seq[max(0, pos - max_tokens) : pos], int(seq[pos])

    def save(self, probe_dir: str | Path) -> None:
        probe_dir = Path(probe_dir)
        probe_dir.mkdir(parents=True, exist_ok=True)
        np.savez(probe_dir / PROBE_FILE, sequences=self.sequences, seq_index=self.seq_index,
                 position=self.position, **self.keys())

    @classmethod
    def load(cls, probe_dir: str | Path) -> "TextProbe":
        path = Path(probe_dir) / PROBE_FILE
        if not path.is_file():
            raise LmprobeError(f"{probe_dir} has no {PROBE_FILE}; is this a language-model run directory?")
        with np.load(path) as z:
            return cls(z["sequences"], z["seq_index"], z["position"])
