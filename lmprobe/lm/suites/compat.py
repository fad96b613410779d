"""One tokenizer for a whole series: the probe is tokenised once, so every checkpoint must read it alike.

Checked before anything is evaluated: every checkpoint's vocabulary size (config.json) and, for
those that carry one, its tokenizer (vocabulary, merges, normalisation and pre-tokenisation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lmprobe.cache import fingerprint
from lmprobe.errors import LmprobeError
from lmprobe.lm.suites.series import SeriesCheckpoint

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_DEFAULT_POSITIONS = 1024


@dataclass
class SharedTokenizer:
    tokenizer: Any
    fingerprint: str
    vocab_size: int  # the models' embedding rows (often padded beyond the tokenizer's length)
    positions: int  # the fewest positions any checkpoint of the series accepts


def shared_tokenizer(series: Sequence[SeriesCheckpoint], tokenizer_name: str | None = None) -> SharedTokenizer:
    """The first checkpoint's tokenizer (or `tokenizer_name`), checked against every checkpoint."""
    from transformers import AutoConfig, AutoTokenizer

    configs = [ckpt.from_pretrained(AutoConfig, "config") for ckpt in series]
    vocab = [_vocab_size(c) for c in configs]
    for ckpt, size in zip(series[1:], vocab[1:]):
        if size != vocab[0]:
            raise LmprobeError(
                f"{ckpt.label} has a vocabulary of {size} tokens but {series[0].label} has {vocab[0]}; "
                f"a suite needs one tokenizer for the whole series: build a separate suite for each"
            )

    if tokenizer_name is not None:
        from lmprobe.lm.data import load_tokenizer

        tokenizer, where = load_tokenizer(tokenizer_name), f"--tokenizer {tokenizer_name}"
    else:
        if not _has_tokenizer(series[0]):
            raise LmprobeError(f"{series[0].label} (the first checkpoint) holds no tokenizer; "
                               f"pass --tokenizer FOLDER with the one the models were trained with")
        tokenizer, where = series[0].from_pretrained(AutoTokenizer, "tokenizer"), series[0].label
    reference = tokenizer_identity(tokenizer)
    for ckpt in series:
        if _has_tokenizer(ckpt) and (ckpt is not series[0] or tokenizer_name is not None):
            if tokenizer_identity(ckpt.from_pretrained(AutoTokenizer, "tokenizer")) != reference:
                raise LmprobeError(
                    f"the tokenizer of {ckpt.label} differs from that of {where}; a suite needs one "
                    f"tokenizer for the whole series: remove {ckpt.label} or build a separate suite"
                )
    if len(tokenizer) > vocab[0]:
        raise LmprobeError(f"the tokenizer ({where}) has {len(tokenizer)} tokens but the models only "
                           f"{vocab[0]}; they were not trained with it: pass the right --tokenizer")
    return SharedTokenizer(tokenizer, reference, vocab[0], min(_positions(c) for c in configs))


def tokenizer_identity(tokenizer: Any) -> str:
    """A hash of what decides token ids: vocabulary, model (merges), normaliser, pre-tokeniser."""
    parts: dict[str, Any] = {"vocab": sorted(tokenizer.get_vocab().items()), "eos": tokenizer.eos_token}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        spec = json.loads(backend.to_str())
        parts.update({k: spec.get(k) for k in ("model", "normalizer", "pre_tokenizer")})
    return fingerprint(parts)


def _has_tokenizer(ckpt: SeriesCheckpoint) -> bool:
    """A Hub revision is assumed to carry one (as Hub models do); a folder must show its files."""
    return ckpt.on_hub or any((Path(ckpt.source) / name).is_file() for name in _TOKENIZER_FILES)


def _vocab_size(config: Any) -> int:
    size = getattr(config, "vocab_size", None)
    if size is None and hasattr(config, "get_text_config"):
        size = getattr(config.get_text_config(), "vocab_size", None)
    if size is None:
        raise LmprobeError(f"the model config ({type(config).__name__}) names no vocab_size; is it a causal LM?")
    return int(size)


def _positions(config: Any) -> int:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return _DEFAULT_POSITIONS
