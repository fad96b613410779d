"""The fixed probe set of a language-model run: token positions in held-out sequences.

An example is one (context, next token) pair: sequence `seq`, target at `position`. Its keys
are what the miner groups by: the target token and the last context token (the input feature),
plus the token before that for longer suffixes. Keys use -1 where a position has no such token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lmprobe.errors import LmprobeError

PROBE_FILE = "probe.npz"
TOKENIZER_DIR = "tokenizer"


@dataclass
class TextProbe:
    """A `ProbeSet` of (context, next token) examples; it computes its own trace rows."""

    sequences: np.ndarray  # int32 [n_seq, block_size]
    seq_index: np.ndarray  # int32 [n] sequence of each example
    position: np.ndarray  # int32 [n] target position within its sequence (>= 1)
    tokenizer: Any = field(default=None, repr=False, compare=False)  # saved beside the probe

    @classmethod
    def choose(
        cls, val_blocks: np.ndarray, n_sequences: int, positions_per_sequence: int | None, seed: int,
        tokenizer: Any = None,
    ) -> "TextProbe":
        """Seeded choice of validation sequences and, optionally, positions within them."""
        rng = np.random.default_rng([seed, 0x9E0B])
        block_positions = val_blocks.shape[1] - 1 if val_blocks.ndim == 2 else 0
        if not 1 <= n_sequences <= len(val_blocks):
            raise LmprobeError(
                f"trace.n_sequences={n_sequences} but the held-out split has {len(val_blocks)} blocks; use 1 to "
                f"{len(val_blocks)} (or hold out more: data.val_fraction, data.max_tokens)")
        if positions_per_sequence is not None and not 1 <= positions_per_sequence <= block_positions:
            raise LmprobeError(
                f"trace.positions_per_sequence={positions_per_sequence} but a block has {block_positions} target "
                f"positions; use 1 to {block_positions} (or null for all)")
        n_seq = n_sequences
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
        return cls(sequences, np.concatenate(seq_index), np.concatenate(position), tokenizer)

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

    # --- ProbeSet: one trace row, the same code in training and in replay ---------------------
    def n_batches(self, batch_size: int) -> int:
        return -(-len(self.sequences) // batch_size)

    def batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rows = slice(index * batch_size, (index + 1) * batch_size)
        return {"input_ids": torch.from_numpy(self.sequences[rows].astype(np.int64)),
                "mask": self._mask()[rows]}

    def _mask(self) -> torch.Tensor:
        if "_mask_cache" not in self.__dict__:
            self._mask_cache = torch.from_numpy(self.loss_mask())
        return self._mask_cache

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from lmprobe.lm.losses import token_losses

        return token_losses(model, batch["input_ids"], batch["mask"])

    def save(self, probe_dir: str | Path) -> None:
        probe_dir = Path(probe_dir)
        probe_dir.mkdir(parents=True, exist_ok=True)
        np.savez(probe_dir / PROBE_FILE, sequences=self.sequences, seq_index=self.seq_index,
                 position=self.position, **self.keys())
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(probe_dir / TOKENIZER_DIR)

    @classmethod
    def load(cls, probe_dir: str | Path, tokenizer: Any = None) -> "TextProbe":
        path = Path(probe_dir) / PROBE_FILE
        if not path.is_file():
            raise LmprobeError(f"{probe_dir} has no {PROBE_FILE}; is this a language-model run directory?")
        with np.load(path) as z:
            return cls(z["sequences"], z["seq_index"], z["position"], tokenizer)
