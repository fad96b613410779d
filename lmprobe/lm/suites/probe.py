"""The probe of a suite: held-out blocks of any text source, in the series' own tokenizer.

Drawn exactly as for a lone checkpoint given --data (lmprobe.lm.runview): documents split into
train and validation, the probe taken from validation blocks (TextProbe.choose), and the fixed
sharpness/lookahead batches from training blocks, so `lmprobe sharpness` works on a suite too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmprobe.lm.data.corpora import is_streaming
from lmprobe.errors import LmprobeError
from lmprobe.lm.probe import TextProbe
from lmprobe.train.train_sample import hessian_indices, lookahead_indices, write_train_sample

STREAMING_MAX_TOKENS = 1_000_000  # a streamed corpus is unbounded; a probe needs only a little of it


@dataclass(frozen=True)
class ProbeSettings:
    """Everything that decides the probe's examples and their losses (a rerun must repeat them)."""

    data: str
    block_size: int
    n_sequences: int
    positions_per_sequence: int | None
    val_fraction: float
    seed: int
    max_tokens: int | None
    dtype: str
    tokenizer: str  # tokenizer_identity of the series' tokenizer


def source_name(data: str) -> str:
    """A local source by its absolute path (a rerun from elsewhere names the same files)."""
    path = Path(data).expanduser()
    if data in ("sample", "openwebtext") or not path.exists():
        return data
    return str(path.resolve())


def max_tokens_for(data: str, max_tokens: int | None) -> int | None:
    return STREAMING_MAX_TOKENS if max_tokens is None and is_streaming(data) else max_tokens


def build_probe(settings: ProbeSettings, tokenizer: Any, probe_dir: Path) -> TextProbe:
    """Tokenise the source, choose the probe, save it (with the tokenizer) and the training sample."""
    from lmprobe.lm.data import prepare_lm_data

    split = prepare_lm_data(settings.data, tokenizer, block_size=settings.block_size,
                            val_fraction=settings.val_fraction, seed=settings.seed, max_tokens=settings.max_tokens)
    if len(split.val) == 0 or len(split.train) == 0:
        raise LmprobeError(f"--data {settings.data} gives {len(split.train)} training and {len(split.val)} held-out "
                           f"blocks of {settings.block_size} tokens; give more text or a smaller --block-size")
    probe = TextProbe.choose(split.val, settings.n_sequences, settings.positions_per_sequence, settings.seed,
                             tokenizer=tokenizer)
    probe.save(probe_dir)

    def batches(indices: list[np.ndarray]) -> list[dict[str, torch.Tensor]]:
        return [{"input_ids": torch.from_numpy(split.train[i].astype(np.int64))} for i in indices]

    n_train = len(split.train)
    write_train_sample(probe_dir, batches(hessian_indices(1, min(8, n_train), n_train)),
                       batches(lookahead_indices(n_train, settings.seed)))
    return probe


def probe_files(probe_dir: Path) -> list[Path]:
    return [p for p in (probe_dir / "probe.npz", probe_dir / "tokenizer", probe_dir / "train_sample.npz")
            if p.exists()]
