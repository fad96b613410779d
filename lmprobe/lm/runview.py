"""A language-model run (or a lone causal-LM checkpoint), as analysis sees it.

Analysis never re-reads the training corpus: the probe, its keys, the tokenizer, the training
sample and the model weights all come from the run directory. A foreign checkpoint (any
save_pretrained causal LM) is supported too; it brings its own tokenizer and needs `--data`, from
which the probe (held-out blocks) and the lookahead/Hessian batches (training blocks of the same
split) are drawn, so they are disjoint by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmprobe.analysis.view_base import RunViewBase, load_checkpoint_model
from lmprobe.errors import LmprobeError, first_line
from lmprobe.lm.display import visible_token
from lmprobe.lm.losses import lm_loss
from lmprobe.lm.probe import TOKENIZER_DIR, TextProbe
from lmprobe.run import Located
from lmprobe.train.train_sample import TrainSample, hessian_indices, lookahead_indices

#: a probe drawn from --data for a lone checkpoint: this many held-out blocks of at most this length
DATA_PROBE_SEQUENCES = 64
DATA_PROBE_BLOCK = 128
DATA_VAL_FRACTION = 0.1


class LMRunView(RunViewBase):
    domain = "lm"
    domain_groupings = ("feature-target", "target", "feature2-feature-target")

    def __init__(self, located: Located, checkpoint: Path | None, probe: TextProbe,
                 sample: TrainSample | None = None):
        super().__init__(located, checkpoint, probe, sample)
        self.tokenizer = probe.tokenizer

    @classmethod
    def open_run(cls, located: Located) -> "LMRunView":
        tokenizer = load_tokenizer_from(located.run_dir / "probe" / TOKENIZER_DIR)
        probe = TextProbe.load(located.run_dir / "probe", tokenizer)
        return cls(located, located.checkpoint, probe)

    @classmethod
    def open_checkpoint(cls, checkpoint: Path, data: str | None) -> "LMRunView":
        if data is None:
            raise LmprobeError(
                f"{checkpoint} is not part of an lmprobe run, so it has no probe set; pass --data "
                f"(sample, a .txt/.jsonl file or folder) to draw one"
            )
        from lmprobe.lm.data import prepare_lm_data

        tokenizer = load_tokenizer_from(checkpoint)
        block = min(DATA_PROBE_BLOCK, model_positions(checkpoint))
        split = prepare_lm_data(data, tokenizer, block_size=block, val_fraction=DATA_VAL_FRACTION, seed=0)
        probe = TextProbe.choose(split.val, DATA_PROBE_SEQUENCES, None, 0, tokenizer=tokenizer)

        def batches(indices: list[np.ndarray]) -> list[dict]:
            return [{"input_ids": torch.from_numpy(split.train[i].astype(np.int64))} for i in indices]

        n_train = len(split.train)
        sample = TrainSample(hessian=batches(hessian_indices(1, min(8, n_train), n_train)),
                             lookahead=batches(lookahead_indices(n_train, 0)))
        return cls(Located("checkpoint", None, checkpoint), checkpoint, probe, sample)

    # --- showing examples ------------------------------------------------------------------
    def describe(self, index: int) -> tuple[str, str]:
        context, target = self.probe.context(index)
        return self.tokenizer.decode(context.tolist()), visible_token(self.tokenizer.decode([target]))

    def domain_key_label(self, name: str, value: int) -> str:
        if value < 0:
            return "∅"
        text = visible_token(self.tokenizer.decode([value]))
        return f"[{text}]" if name == "target" else text

    # --- the model and its loss ------------------------------------------------------------
    def load_model(self, checkpoint: Path) -> nn.Module:
        from transformers import AutoModelForCausalLM

        model = load_checkpoint_model(
            checkpoint, lambda folder: AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True))
        check_vocab(model, self.probe, str(checkpoint))
        return model.eval()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lm_loss(model, batch)

    def features(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last hidden state (after the final layer norm) at each probe position: what the output
        head reads to predict the target. The head itself is skipped, so this pass costs less than
        a probe evaluation."""
        with torch.no_grad():
            hidden = model.base_model(input_ids=batch["input_ids"], use_cache=False).last_hidden_state[:, :-1]
        return hidden[batch["mask"].to(hidden.device)].float()


def load_tokenizer_from(folder: str | Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - missing files, and a damaged config.json fails in many ways
        reason = first_line(exc, 160)
        raise LmprobeError(f"no tokenizer could be loaded from {folder}: {reason}") from None


def model_positions(checkpoint: Path) -> int:
    try:
        config = json.loads((checkpoint / "config.json").read_text())
        return int(config.get("n_positions") or config.get("max_position_embeddings") or 1024)
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        reason = first_line(exc)
        raise LmprobeError(f"{checkpoint / 'config.json'} is damaged ({reason}); restore it") from None


def check_vocab(model: nn.Module, probe: TextProbe, where: str) -> None:
    vocab = model.get_input_embeddings().num_embeddings
    top = int(probe.sequences.max()) if probe.sequences.size else -1
    if top >= vocab:
        raise LmprobeError(
            f"{where} has a vocabulary of {vocab} tokens but the probe uses token id {top}; "
            f"the checkpoint and the data were tokenised differently (pass the matching --data/tokenizer)"
        )
