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


def check_attn_implementation(name: str) -> str:
    """The attention kernel, or a one-line error when it cannot run here (flash-attn missing)."""
    if name == "flash_attention_2":
        import importlib.util

        if importlib.util.find_spec("flash_attn") is None:
            raise LmprobeError("model.attn_implementation=flash_attention_2 needs the flash-attn package "
                               "(pip install flash-attn, CUDA only); use sdpa (the default) or eager")
        if not torch.cuda.is_available():
            raise LmprobeError("model.attn_implementation=flash_attention_2 runs on CUDA GPUs only; "
                               "use sdpa (the default) or eager")
    return name


def build_gpt2(cfg: ModelConfig, vocab_size: int, block_size: int, eos_id: int | None) -> GPT2LMHeadModel:
    """A GPT-2 from its config, or `cfg.init_from` (a local save_pretrained folder)."""
    attn = check_attn_implementation(getattr(cfg, "attn_implementation", "sdpa"))
    if cfg.init_from:
        path = Path(cfg.init_from)
        if not (path / "config.json").is_file():
            raise LmprobeError(f"model.init_from={path} is not a save_pretrained folder (no config.json)")
        model = GPT2LMHeadModel.from_pretrained(path, local_files_only=True, attn_implementation=attn)
        if model.config.n_positions < block_size:
            raise LmprobeError(
                f"model.init_from has {model.config.n_positions} positions but data.block_size={block_size}; "
                f"set data.block_size <= {model.config.n_positions}"
            )
        model.config.use_cache = False  # training and probing never decode
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
        attn_implementation=attn,
    )
    return GPT2LMHeadModel(config)


def gpt2_flops_per_token(model: GPT2LMHeadModel, block_size: int) -> float:
    """Training FLOPs per token as nanoGPT (PaLM appendix B) estimates them: 6N + 12 L H Q T.

    N counts the parameters once (tied embedding and head are one matrix) without the position
    embedding; L layers, H heads of width Q, context T. Forward + backward, no recomputation.
    """
    config = model.config
    n_params = sum(p.numel() for p in model.parameters())
    n_params -= model.transformer.wpe.weight.numel()
    head_dim = config.n_embd // config.n_head
    return 6.0 * n_params + 12.0 * config.n_layer * config.n_head * head_dim * block_size


def publishable_tokenizer(tokenizer, n_positions: int):
    """A copy whose limits match the model: model_max_length = n_positions (a longer prompt is
    truncated or refused, not an index error), truncation from the left (generation continues from
    the end of a prompt), and eos as the pad token (batched generation needs one)."""
    import copy

    published = copy.deepcopy(tokenizer)
    published.model_max_length = n_positions
    published.truncation_side = "left"
    published.init_kwargs["truncation_side"] = "left"  # saved from init_kwargs, not the attribute
    for local_only in ("local_files_only", "is_local"):  # how we loaded it, not what a user needs
        published.init_kwargs.pop(local_only, None)
    if published.pad_token is None and published.eos_token is not None:
        published.pad_token = published.eos_token
    return published


def save_publishable(model: nn.Module, tokenizer, folder: Path, state_dict: dict | None = None) -> None:
    """save_pretrained a folder the Hub and `pipeline("text-generation")` take as it is.

    Training calls the model with use_cache=False; the saved config says use_cache=true so that
    generation reuses its key/value cache (twice as fast). The generation config knows the pad
    token and stops at the model's positions (max_length = n_positions): without it the pipeline's
    default of 256 new tokens runs past the position table into an IndexError, and a prompt longer
    than the context gets transformers' message naming max_length instead.
    """
    config, generation = model.config, getattr(model, "generation_config", None)
    if generation is None:
        model.save_pretrained(folder, state_dict=state_dict)
        tokenizer.save_pretrained(folder)
        return
    published = {"pad_token_id": tokenizer.pad_token_id, "use_cache": True, "max_length": config.n_positions}
    saved = config.use_cache, {key: getattr(generation, key) for key in published}
    config.use_cache = True
    for key, value in published.items():
        setattr(generation, key, value)
    try:
        model.save_pretrained(folder, state_dict=state_dict)
    finally:
        config.use_cache = saved[0]
        for key, value in saved[1].items():
            setattr(generation, key, value)
    tokenizer.save_pretrained(folder)


class LMTask:
    """Token blocks from `prepare_lm_data`, a GPT-2, and a probe of held-out positions."""

    domain = "lm"
    unit = "tokens"

    def __init__(self, cfg: LMConfig):
        from lmprobe.lm.data import load_tokenizer, open_token_store, prepare_lm_data

        self.model_cfg, self.data_cfg = cfg.model, cfg.data
        self.tokenizer = load_tokenizer(
            cfg.data.tokenizer, source=cfg.data.source, cache_dir=cfg.data.cache_dir
        )
        check_attn_implementation(cfg.model.attn_implementation)  # before any slow tokenisation
        settings = dict(block_size=cfg.data.block_size, val_fraction=cfg.data.val_fraction, seed=cfg.train.seed,
                        max_tokens=cfg.data.max_tokens, cache_dir=cfg.data.cache_dir)
        if cfg.data.storage == "mmap":
            self.data = open_token_store(cfg.data.source, self.tokenizer, num_proc=cfg.data.num_proc, **settings)
        else:
            self.data = prepare_lm_data(cfg.data.source, self.tokenizer, **settings)
        self.probe = TextProbe.choose(self.data.val, cfg.trace.n_sequences, cfg.trace.positions_per_sequence,
                                      cfg.train.seed, tokenizer=self.tokenizer)

    # --- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        return build_gpt2(self.model_cfg, len(self.tokenizer), self.data_cfg.block_size,
                          self.tokenizer.eos_token_id)

    def load_model(self, folder: Path) -> nn.Module:
        model = GPT2LMHeadModel.from_pretrained(folder, local_files_only=True,
                                                attn_implementation=self.model_cfg.attn_implementation)
        model.config.use_cache = False  # saved true for generation; training never decodes
        return model

    def save_pretrained(self, model: nn.Module, folder: Path, state_dict: dict | None = None) -> None:
        save_publishable(model, self._hub_tokenizer(model), folder, state_dict)

    def _hub_tokenizer(self, model: nn.Module):
        """The training tokenizer as a published model needs it (a copy: training's is untouched)."""
        if getattr(self, "_published_tokenizer", None) is None:
            self._published_tokenizer = publishable_tokenizer(self.tokenizer, model.config.n_positions)
        return self._published_tokenizer

    # --- data ------------------------------------------------------------------------------
    def n_train(self) -> int:
        return len(self.data.train)

    def n_val(self) -> int:
        return len(self.data.val)

    def units_per_example(self) -> int:
        return self.data_cfg.block_size

    def flops_per_example(self, model: nn.Module) -> float:
        """Training FLOPs of one block (forward + backward), for MFU: 6N + 12 L H Q T per token x T."""
        return gpt2_flops_per_token(model, self.data_cfg.block_size) * self.data_cfg.block_size

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
