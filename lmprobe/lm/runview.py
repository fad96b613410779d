"""Reading a language-model run (or a lone checkpoint) for analysis.

Analysis never re-reads the training corpus: the probe, its keys, the tokenizer and the model
weights all come from the run directory. A foreign GPT-2 checkpoint (any save_pretrained
folder) is supported too; it brings its own tokenizer and needs data for a probe.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmprobe.errors import LmprobeError
from lmprobe.lm.probe import TextProbe
from lmprobe.train.checkpoint import CHECKPOINT_RE
from lmprobe.train.rundir import CONFIG_FILE


@dataclass
class Located:
    """What a user-given path turned out to be."""

    kind: str  # "run" or "checkpoint"
    run_dir: Path | None  # the run a checkpoint belongs to, if any
    checkpoint: Path | None


def locate(path: str | Path) -> Located:
    """Classify PATH as a run directory or a checkpoint folder, or fail with advice."""
    path = Path(path)
    if not path.exists():
        raise LmprobeError(f"{path} does not exist; give a run directory (runs/NAME) or a checkpoint folder")
    if (path / CONFIG_FILE).is_file() and (path / "probe").is_dir():
        return Located("run", path, None)
    if (path / "config.json").is_file():
        parent = path.parent.parent
        in_run = (CHECKPOINT_RE.match(path.name) and path.parent.name == "checkpoints"
                  and (parent / CONFIG_FILE).is_file())
        return Located("checkpoint", parent if in_run else None, path)
    raise LmprobeError(
        f"{path} is neither a run directory (config.yaml + probe/) nor a checkpoint folder "
        f"(config.json from save_pretrained)"
    )


def load_tokenizer_from(folder: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise LmprobeError(f"no tokenizer could be loaded from {folder}: {str(exc).splitlines()[0]}") from None


def load_model(checkpoint: str | Path) -> torch.nn.Module:
    """A causal LM from a save_pretrained folder, with the math attention path (double backward)."""
    from transformers import AutoModelForCausalLM

    try:
        model = AutoModelForCausalLM.from_pretrained(
            str(checkpoint), local_files_only=True, attn_implementation="eager"
        )
    except (OSError, ValueError) as exc:
        raise LmprobeError(f"could not load a model from {checkpoint}: {str(exc).splitlines()[0]}") from None
    return model.eval()


def run_probe(run_dir: Path) -> TextProbe:
    return TextProbe.load(run_dir / "probe")


def run_tokenizer(run_dir: Path):
    return load_tokenizer_from(run_dir / "probe" / "tokenizer")


def check_vocab(model: torch.nn.Module, probe: TextProbe, where: str) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    top = int(probe.sequences.max()) if probe.sequences.size else -1
    if top >= vocab:
        raise LmprobeError(
            f"{where} has a vocabulary of {vocab} tokens but the probe uses token id {top}; "
            f"the checkpoint and the data were tokenised differently (pass the matching --data/tokenizer)"
        )


@torch.inference_mode()
def probe_losses(model: torch.nn.Module, probe: TextProbe, batch_size: int = 64) -> np.ndarray:
    """One trace row: the loss of every probe example under `model` (forward only, batched)."""
    from lmprobe.lm.task import token_losses

    mask = torch.from_numpy(probe.loss_mask())
    out = []
    for start in range(0, len(probe.sequences), batch_size):
        ids = torch.from_numpy(probe.sequences[start : start + batch_size].astype(np.int64))
        out.append(token_losses(model, ids, mask[start : start + batch_size]).float().numpy())
    return np.concatenate(out)
