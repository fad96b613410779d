"""GPT-2 language modelling as a Task for the shared training loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from lmprobe.config import DataConfig, ModelConfig
from lmprobe.errors import LmprobeError
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


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of token blocks (what training descends)."""
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss


HEAD_CHUNK = 256  # positions per slab of logits when only some positions are scored


def token_losses(model: nn.Module, input_ids: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy: [batch, block_size - 1], or flat at `mask`ed positions.

    With a mask the output head runs only where a loss is wanted: on a probe of a few
    positions per sequence that skips most of the (vocabulary-sized) logits.
    """
    if mask is None:
        logits = model(input_ids=input_ids, use_cache=False).logits
        targets = F.pad(input_ids[:, 1:], (0, 1), value=-100)  # no copy of the logits
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        return losses.view(input_ids.shape)[:, :-1]
    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1][mask]
    targets = input_ids[:, 1:][mask]
    head = model.get_output_embeddings()
    losses = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), HEAD_CHUNK):  # vocabulary-wide logits, a cache-sized slab at a time
        logits = head(hidden[start : start + HEAD_CHUNK]).float()
        picked = logits.gather(1, targets[start : start + HEAD_CHUNK, None])[:, 0]
        losses[start : start + HEAD_CHUNK] = torch.logsumexp(logits, dim=-1) - picked
    return losses


class LMTask:
    """Token blocks from `prepare_lm_data`, a GPT-2, and a probe of held-out positions."""

    unit = "tokens"

    def __init__(self, model_cfg: ModelConfig, data_cfg: DataConfig, probe_sequences: int,
                 probe_positions: int | None, seed: int):
        from lmprobe.data import load_tokenizer, prepare_lm_data

        self.model_cfg, self.data_cfg = model_cfg, data_cfg
        self.tokenizer = load_tokenizer(
            data_cfg.tokenizer, source=data_cfg.source, cache_dir=data_cfg.cache_dir
        )
        self.data = prepare_lm_data(
            data_cfg.source, self.tokenizer, block_size=data_cfg.block_size,
            val_fraction=data_cfg.val_fraction, seed=seed, max_tokens=data_cfg.max_tokens,
            cache_dir=data_cfg.cache_dir,
        )
        self.probe = TextProbe.choose(self.data.val, probe_sequences, probe_positions, seed)
        self._probe_mask = torch.from_numpy(self.probe.loss_mask())

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

    def example_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_losses(model, batch["input_ids"])

    # --- probe -----------------------------------------------------------------------------
    def n_probe_examples(self) -> int:
        return self.probe.n_examples

    def n_probe_batches(self, batch_size: int) -> int:
        return -(-len(self.probe.sequences) // batch_size)

    def probe_batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rows = slice(index * batch_size, (index + 1) * batch_size)
        return {"input_ids": torch.from_numpy(self.probe.sequences[rows].astype(np.int64)),
                "mask": self._probe_mask[rows]}

    def probe_losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return token_losses(model, batch["input_ids"], batch["mask"])

    def save_probe(self, probe_dir: Path) -> None:
        self.probe.save(probe_dir)
        self.tokenizer.save_pretrained(probe_dir / "tokenizer")

    def describe(self) -> dict[str, Any]:
        d = self.data
        return {
            "vocab_size": len(self.tokenizer), "n_train_blocks": len(d.train),
            "n_val_blocks": len(d.val), "n_train_tokens": int(d.n_train_tokens),
            "unigram_entropy_nats": getattr(d, "unigram_entropy_nats", None),
            "probe_examples": self.probe.n_examples,
        }
