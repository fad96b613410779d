"""Where a command's model and examples come from: a run, a checkpoint in a run, or a lone
save_pretrained folder plus `--data`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.lm.probe import TextProbe
from lmprobe.lm.runview import Located, check_vocab, load_model, load_tokenizer_from, locate, run_probe, run_tokenizer
from lmprobe.train.checkpoint import latest_checkpoint


@dataclass
class Subject:
    located: Located
    checkpoint: Path  # the checkpoint to analyse
    probe: TextProbe
    tokenizer: object


def probe_from_data(source: str, tokenizer, *, block_size: int, n_sequences: int, seed: int) -> TextProbe:
    """A probe drawn from held-out blocks of `source`, tokenised with the checkpoint's tokenizer."""
    from lmprobe.data import prepare_lm_data

    data = prepare_lm_data(source, tokenizer, block_size=block_size, val_fraction=0.1, seed=seed)
    return TextProbe.choose(data.val, n_sequences, None, seed)


def resolve_subject(path: str, data: str | None, *, block_size: int = 128, n_sequences: int = 64,
                    seed: int = 0) -> Subject:
    """PATH (run or checkpoint) -> the checkpoint to load and the probe examples to use."""
    located = locate(path)
    if located.kind == "run":
        found = latest_checkpoint(located.run_dir)
        if found is None:
            raise LmprobeError(f"run {located.run_dir} has no checkpoint yet; train longer or resume it")
        checkpoint = found[1]
    else:
        checkpoint = located.checkpoint
    if data is not None:
        tokenizer = load_tokenizer_from(checkpoint)
        model_positions = _n_positions(checkpoint)
        probe = probe_from_data(data, tokenizer, block_size=min(block_size, model_positions),
                                n_sequences=n_sequences, seed=seed)
    elif located.run_dir is not None:
        probe, tokenizer = run_probe(located.run_dir), run_tokenizer(located.run_dir)
    else:
        raise LmprobeError(
            f"{checkpoint} is not part of an lmprobe run, so it has no probe set; pass --data "
            f"(sample, a .txt/.jsonl file or folder) to draw one"
        )
    return Subject(located, checkpoint, probe, tokenizer)


def load_checked_model(subject: Subject):
    model = load_model(subject.checkpoint)
    check_vocab(model, subject.probe, str(subject.checkpoint))
    return model


def probe_batches(probe: TextProbe, batch_size: int, n_batches: int) -> list[dict]:
    import torch

    sequences = probe.sequences[: batch_size * n_batches]
    if len(sequences) < batch_size:
        raise LmprobeError(f"the probe has {len(probe.sequences)} sequences; use --batch-size <= that")
    return [{"input_ids": torch.from_numpy(sequences[i : i + batch_size].astype(np.int64))}
            for i in range(0, len(sequences) - batch_size + 1, batch_size)]


def _n_positions(checkpoint: Path) -> int:
    import json

    config = json.loads((checkpoint / "config.json").read_text())
    return int(config.get("n_positions") or config.get("max_position_embeddings") or 1024)
