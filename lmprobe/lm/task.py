"""GPT-2 language modelling as a Task for the shared training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from lmprobe.errors import LmprobeError
from lmprobe.lm.config import LMConfig, ModelConfig
from lmprobe.lm.losses import lm_loss, token_losses
from lmprobe.lm.probe import TextProbe


def build_gpt2(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int | None) -> GPT2LMHeadModel:
    """A GPT-2 from its config, or `cfg.init_from` (a local save_pretrained folder)."""
    if cfg.init_from:
        path = Path(cfg.init_from)
        if not (path / "config.json").is_file():
            raise LmprobeError(f"model.init_from={path} is not a save_pretrained folder (no config.json)")
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True)
        if model.config.vocab_size != vocab_size:
            raise LmprobeError(
                f"model.init_from has vocabulary {model.config.vocab_size} but the tokenizer has "
                f"{vocab_size}; use the tokenizer the model was trained with (data.tokenizer={path})"
            )
        return model
    if cfg.n_embd % cfg.n_head:
        raise LmprobeError(f"model.n_embd={cfg.n_embd} must be divisible by model.n_head={cfg.n_head}")
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
        bos_token_id=eos_id, eos_token_id=eos_id,
        # GPT-2's tanh-approximate GELU, computed by one fused kernel instead of
        # transformers' six-op "gelu_new" composite (same function, fewer saved activations)
        activation_function="gelu_pytorch_tanh",
        use_cache=False,  # training and probing never decode: no key/value cache to build
    )
    return GPT2LMHeadModel(config)


class LMTask:
    """Token blocks from `prepare_lm_data`, a GPT-2, and a probe of held-out positions."""

    domain = "lm"
    unit = "tokens"

    def __init__(self, cfg: LMConfig):
        from lmprobe.data import load_tokenizer, prepare_lm_data

        self.model_cfg, self.data_cfg = cfg.model, cfg.data
        self.tokenizer = load_tokenizer(
            cfg.data.tokenizer, source=cfg.data.source, cache_dir=cfg.data.cache_dir
        )
        self.data = prepare_lm_data(
            cfg.data.source, self.tokenizer, block_size=cfg.data.block_size,
            val_fraction=cfg.data.val_fraction, seed=cfg.train.seed, max_tokens=cfg.data.max_tokens,
            cache_dir=cfg.data.cache_dir,
        )
        self.probe = TextProbe.choose(self.data.val, cfg.trace.n_sequences, cfg.trace.positions_per_sequence,
                                      cfg.train.seed, tokenizer=self.tokenizer)

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_gpt2(self.model_cfg, len(self.tokenizer), self.data_cfg.block_size,
                          self.tokenizer.eos_token_id)

    def load_model(self, folder: Path) -> nn.Module:
        return GPT2LMHeadModel.from_pretrained(folder, local_files_only=True)

    def save_pretrained(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder)
        self.tokenizer.save_pretrained(folder)

    # --- data ------------------------------------------------------------------------------
    def n_train(self) -> int:
        return len(self.data.train)

    def n_val(self) -> int:
        return len(self.data.val)

    def units_per_example(self) -> int:
        return self.data_cfg.block_size

    def train_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(self.data.train[indices].astype(np.int64))}

    def val_batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.from_numpy(self.data.val[indices].astype(np.int64))}

    # --- losses ----------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return lm_loss(model, batch)

    def eval_outputs(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_losses(model, batch["input_ids"])

    def eval_summary(self, outputs: np.ndarray) -> dict[str, float]:
        from lmprobe.metrics import perplexity

        result = perplexity(outputs)
        return {"val_loss": result["loss"], "val_ppl": result["perplexity"]}

    def data_summary(self) -> dict[str, Any]:
        d = self.data
        return {
            "vocab_size": len(self.tokenizer), "n_train_blocks": len(d.train),
            "n_val_blocks": len(d.val), "n_train_tokens": int(d.n_train_tokens),
            "unigram_entropy_nats": getattr(d, "unigram_entropy_nats", None),
            "probe_examples": self.probe.n_examples,
        }
