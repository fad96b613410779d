"""Tokenizers: GPT-2's own BPE (bundled), a smaller GPT-2-style BPE trained on the corpus, or a
local tokenizer folder.

Why "bpe-<N>": GPT-2's 50,257-token embedding dominates a laptop-sized model. A byte-level BPE
trained from GPT-2's template (same pre-tokenizer and byte alphabet, `<|endoftext|>` as EOS)
keeps the tokenisation the paper's example relies on: "\\n" and " the" are single tokens, so
contexts ending in ":" followed by "\\n" vs. " the" exist exactly as under GPT-2.
"""

from __future__ import annotations

import json
import os
import re
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lmprobe.cache import cache_root, cached_folder, fingerprint
from lmprobe.lm.data.corpora import ASSETS_DIR, is_streaming, iter_documents, source_fingerprint
from lmprobe.errors import LmprobeError, first_line

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

GPT2_DIR = ASSETS_DIR / "gpt2"
BPE_CACHE_VERSION = 1
MIN_BPE_VOCAB = 260  # 256 byte symbols + <|endoftext|> + a few merges
STREAMING_BPE_DOCUMENTS = 50_000  # a streaming source is unbounded: train on its first documents
SINGLE_TOKEN_STRINGS = ("\n", " the")
_BPE_NAME = re.compile(r"bpe-(\d+)")
_TRAIN_BATCH = 1000


def load_tokenizer(
    name: str, *, source: str = "sample", cache_dir: str | os.PathLike | None = None
) -> PreTrainedTokenizerFast:
    """Resolve a tokenizer name.

    - "gpt2": the bundled GPT-2 BPE (50,257 tokens), offline.
    - "bpe-<N>": a GPT-2-style byte-level BPE with N tokens trained on `source`, cached under
      cache_dir/tokenizers/ keyed by (source content, N, tokenizers version), so only the first
      call trains. A streaming source is trained on its first STREAMING_BPE_DOCUMENTS documents.
    - anything else: a local folder loaded with AutoTokenizer (local files only).
    """
    if name == "gpt2":
        return _load_folder(GPT2_DIR, name)
    match = _BPE_NAME.fullmatch(name)
    if match:
        return _trained_bpe(int(match[1]), source=source, cache_dir=cache_dir)
    return _load_folder(Path(name).expanduser(), name)


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerFast) -> str:
    """A content hash of the tokenisation pipeline (vocabulary, merges, special tokens).

    Remembered per tokenizer object (and its size, which adding tokens changes): GPT-2's pipeline
    is a 3.5 MB JSON text, hashed once instead of at every cache lookup.
    """
    state = (len(tokenizer), tokenizer.eos_token_id)
    try:
        remembered = _FINGERPRINTS.get(tokenizer)
    except TypeError:  # not weak-referenceable or not hashable
        remembered = None
    if remembered is not None and remembered[0] == state:
        return remembered[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest = fingerprint({"backend": backend.to_str(), "eos": tokenizer.eos_token_id})
    else:
        digest = fingerprint({"class": type(tokenizer).__name__, "path": tokenizer.name_or_path, "n": len(tokenizer)})
    try:
        _FINGERPRINTS[tokenizer] = (state, digest)
    except TypeError:
        pass
    return digest


_FINGERPRINTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def single_token_violations(tokenizer: PreTrainedTokenizerFast) -> list[str]:
    """The strings of SINGLE_TOKEN_STRINGS that the tokenizer splits into several tokens."""
    return [s for s in SINGLE_TOKEN_STRINGS if len(tokenizer.encode(s, add_special_tokens=False)) != 1]


def _trained_bpe(vocab_size: int, *, source: str, cache_dir: str | os.PathLike | None) -> PreTrainedTokenizerFast:
    import tokenizers

    name = f"bpe-{vocab_size}"
    if vocab_size < MIN_BPE_VOCAB:
        raise LmprobeError(f"tokenizer {name!r}: the vocabulary size must be at least {MIN_BPE_VOCAB}.")
    key = fingerprint(
        {
            "version": BPE_CACHE_VERSION,
            "vocab_size": vocab_size,
            "source": source_fingerprint(source),
            "streaming_documents": STREAMING_BPE_DOCUMENTS if is_streaming(source) else None,
            "tokenizers": tokenizers.__version__,
        }
    )
    entry = cache_root(cache_dir) / "tokenizers" / f"{name}-{key[:16]}"

    def build(folder: Path) -> None:
        max_documents = STREAMING_BPE_DOCUMENTS if is_streaming(source) else None
        batches = _batches(iter_documents(source, max_documents=max_documents))
        template = _load_folder(GPT2_DIR, "gpt2")
        trained = template.train_new_from_iterator(batches, vocab_size=vocab_size, show_progress=False)
        trained.save_pretrained(str(folder))
        meta = {"name": name, "source": str(source), "fingerprint": key}
        (folder / "lmprobe.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    folder, _ = cached_folder(entry, build)
    tokenizer = _load_folder(folder, name)
    missing = single_token_violations(tokenizer)
    if missing:
        warnings.warn(
            f"tokenizer {name} trained on {source!r} splits {missing!r} into several tokens "
            "(too little text or too small a vocabulary); the ':' probes expect single tokens.",
            stacklevel=3,
        )
    return tokenizer


def _batches(docs: Iterator[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _TRAIN_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _load_folder(path: Path, name: str) -> PreTrainedTokenizerFast:
    """AutoTokenizer on a local folder, with every failure turned into one LmprobeError line."""
    if not path.exists():
        raise LmprobeError(
            f"tokenizer {name!r} is not 'gpt2', 'bpe-<N>' (e.g. bpe-8192) or an existing folder; give one of those."
        )
    if not path.is_dir():
        raise LmprobeError(f"tokenizer {name!r} is a file; give the folder that holds the tokenizer files.")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError here
        reason = first_line(exc, 160)
        raise LmprobeError(
            f"could not load a tokenizer from folder {str(path)!r} ({reason}); it must hold files "
            "written by save_pretrained (tokenizer.json, or vocab.json + merges.txt + tokenizer_config.json)."
        ) from None
