"""Turn a source into fixed-length token blocks for language-model training.

Each document is tokenised and followed by EOS; documents are split into train and validation
*by document* (a seeded permutation), so no validation text leaks into training blocks; each
split's documents are concatenated in that permuted order and cut into blocks of block_size
(the remainder is dropped). Tokenisation, the slow part, is cached on disk keyed by the source's
content and the tokenizer's content; the split and the packing are cheap and redone every call.
Everything here lives in RAM (int32); lmprobe.lm.data.store gives the same blocks memory-mapped from
disk for corpora that do not fit (data.storage=mmap).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmprobe.cache import cache_root, cached_folder, fingerprint
from lmprobe.lm.data.corpora import is_streaming, iter_documents, source_fingerprint
from lmprobe.lm.data.tokenizer import tokenizer_fingerprint
from lmprobe.errors import LmprobeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

TOKENS_CACHE_VERSION = 1
_BATCH_DOCUMENTS = 256
_BATCH_CHARACTERS = 1_000_000  # small batches keep a token cap from encoding far past it


@dataclass
class PackedData:
    """Train/validation token blocks plus what a run needs to report about them."""

    train: np.ndarray  # [n_train_blocks, block_size]: int32 in memory, or uint16/uint32 memory-mapped (store)
    val: np.ndarray  # [n_val_blocks, block_size], as train
    vocab_size: int
    n_train_tokens: int  # tokens in train blocks (train.size)
    n_val_tokens: int
    block_size: int
    eos_id: int
    source: str
    unigram_entropy_nats: float  # entropy of the train blocks' token frequencies, natural log
    train_documents: np.ndarray  # source-order indices of the train documents, in packing order
    val_documents: np.ndarray
    n_source_tokens: int  # every token taken from the source (EOS included), before packing

    @property
    def n_documents(self) -> int:
        return len(self.train_documents) + len(self.val_documents)

    @classmethod
    def from_blocks(cls, train: np.ndarray, val: np.ndarray, tokenizer: PreTrainedTokenizerBase, *, source: str,
                    unigram_entropy_nats: float, train_documents: np.ndarray, val_documents: np.ndarray,
                    n_source_tokens: int) -> "PackedData":
        """The packed split with the counts derived from its blocks (in memory or memory-mapped alike)."""
        return cls(train=train, val=val, vocab_size=len(tokenizer), n_train_tokens=int(train.size),
                   n_val_tokens=int(val.size), block_size=int(train.shape[1]), eos_id=int(tokenizer.eos_token_id),
                   source=source, unigram_entropy_nats=unigram_entropy_nats, train_documents=train_documents,
                   val_documents=val_documents, n_source_tokens=int(n_source_tokens))


def prepare_lm_data(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    val_fraction: float,
    seed: int,
    max_tokens: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> PackedData:
    """Tokenise `source` (cached), split by document, pack into blocks. Deterministic given seed.

    max_tokens caps the tokens taken from the source, in source order (the last document may be
    cut); it is required for streaming sources such as "openwebtext".
    """
    source = os.fspath(source)
    check_arguments(source, block_size, val_fraction, max_tokens)
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise LmprobeError("the tokenizer has no EOS token; documents need one as a separator.")

    tokens, offsets = tokenize_source(source, tokenizer, max_tokens=max_tokens, cache_dir=cache_dir)
    n_docs = len(offsets) - 1
    if n_docs < 2:
        raise single_document_error(source, n_docs)
    train_docs, val_docs = split_documents(n_docs, val_fraction, seed)
    train_stream = _gather(tokens, offsets, train_docs)
    val_stream = _gather(tokens, offsets, val_docs)
    if len(train_stream) < block_size or len(val_stream) < block_size:
        raise too_small_error(source, len(tokens), n_docs, len(train_stream), len(val_stream), block_size)
    train = pack_blocks(train_stream, block_size)
    val = pack_blocks(val_stream, block_size)
    return PackedData.from_blocks(
        train, val, tokenizer, source=source, unigram_entropy_nats=unigram_entropy_nats(train, len(tokenizer)),
        train_documents=train_docs, val_documents=val_docs, n_source_tokens=len(tokens))


def tokenize_source(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_tokens: int | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(tokens int32, offsets int64): document i is tokens[offsets[i]:offsets[i+1]], EOS last.

    Cached under cache_dir/tokens/ keyed by the source fingerprint, the tokenizer's content and
    max_tokens.
    """
    key = fingerprint(
        {
            "version": TOKENS_CACHE_VERSION,
            "source": source_fingerprint(source),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_tokens": max_tokens,
        }
    )
    entry = cache_root(cache_dir) / "tokens" / key[:32]

    def build(folder: Path) -> None:
        tokens, offsets = encode_documents(iter_documents(source), tokenizer, max_tokens=max_tokens)
        np.save(folder / "tokens.npy", tokens, allow_pickle=False)
        np.save(folder / "offsets.npy", offsets, allow_pickle=False)
        meta = {"source": source, "documents": len(offsets) - 1, "tokens": len(tokens), "key": key}
        (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    folder, _ = cached_folder(entry, build)
    return np.load(folder / "tokens.npy"), np.load(folder / "offsets.npy")


def encode_documents(
    docs: Iterable[str], tokenizer: PreTrainedTokenizerBase, *, max_tokens: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Batch-encode documents with EOS appended; stop once max_tokens tokens are collected."""
    eos_id = tokenizer.eos_token_id
    pieces: list[np.ndarray] = []
    lengths: list[int] = []
    total = 0
    for ids in _encoded(docs, tokenizer):
        doc = np.asarray([*ids, eos_id], dtype=np.int32)
        if max_tokens is not None and total + len(doc) >= max_tokens:
            doc = doc[: max_tokens - total]
            if len(doc):
                pieces.append(doc)
                lengths.append(len(doc))
            total += len(doc)
            break
        pieces.append(doc)
        lengths.append(len(doc))
        total += len(doc)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return tokens, offsets


def split_documents(n_docs: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) document indices from one seeded permutation; val gets at least 1 document."""
    order = np.random.default_rng(seed).permutation(n_docs)
    n_val = min(max(1, round(val_fraction * n_docs)), n_docs - 1)
    return order[n_val:], order[:n_val]


def pack_blocks(stream: np.ndarray, block_size: int) -> np.ndarray:
    """Contiguous [n_blocks, block_size] int32 view of the stream, remainder dropped."""
    n_blocks = len(stream) // block_size
    return np.ascontiguousarray(stream[: n_blocks * block_size].reshape(n_blocks, block_size), dtype=np.int32)


def unigram_entropy_nats(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy (natural log) of the token frequency distribution: the loss of the best
    context-free predictor, a baseline every trained model must beat."""
    counts = np.bincount(np.asarray(tokens, dtype=np.int64).ravel(), minlength=vocab_size)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _gather(tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray) -> np.ndarray:
    if len(docs) == 0:
        return np.zeros(0, dtype=np.int32)
    return np.concatenate([tokens[offsets[i] : offsets[i + 1]] for i in docs])


def _encoded(docs: Iterable[str], tokenizer: PreTrainedTokenizerBase) -> Iterator[list[int]]:
    """Token ids per document, in batches; the Rust backend directly when there is one (faster,
    and free of the model_max_length warning that long documents would trigger)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and (backend.truncation is not None or backend.padding is not None):
        from tokenizers import Tokenizer

        backend = Tokenizer.from_str(backend.to_str())
        backend.no_truncation()
        backend.no_padding()
    batch: list[str] = []
    chars = 0
    for doc in docs:
        batch.append(doc)
        chars += len(doc)
        if len(batch) == _BATCH_DOCUMENTS or chars >= _BATCH_CHARACTERS:
            yield from _encode_batch(batch, tokenizer, backend)
            batch = []
            chars = 0
    if batch:
        yield from _encode_batch(batch, tokenizer, backend)


def _encode_batch(batch: list[str], tokenizer: PreTrainedTokenizerBase, backend) -> list[list[int]]:
    if backend is not None:
        return [enc.ids for enc in backend.encode_batch_fast(batch, add_special_tokens=False)]
    return tokenizer(batch, add_special_tokens=False)["input_ids"]


def check_arguments(source: str, block_size: int, val_fraction: float, max_tokens: int | None,
                    require_cap: bool = True) -> None:
    """One-line errors for bad settings; `require_cap`: a streamed source needs max_tokens (in memory)."""
    if not isinstance(block_size, (int, np.integer)) or block_size < 1:
        raise LmprobeError(f"block_size must be a positive integer, got {block_size!r}.")
    if not 0.0 < val_fraction < 1.0:
        raise LmprobeError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction!r}.")
    if max_tokens is not None and max_tokens < 1:
        raise LmprobeError(f"max_tokens must be a positive integer or None, got {max_tokens!r}.")
    if require_cap and max_tokens is None and is_streaming(source):
        raise LmprobeError(
            f"data source {source!r} is streamed and unbounded: set max_tokens (data.max_tokens) to cap it, "
            "or use the on-disk token store (data.storage=mmap)."
        )


def single_document_error(source: str, n_docs: int) -> LmprobeError:
    return LmprobeError(
        f"data source {source!r} has {n_docs} document; the train/validation split is by document, "
        f"so it needs at least 2 (separate documents in a .txt file with {'<|endoftext|>'!r} lines, "
        "or use a .jsonl file or a folder)."
    )


def too_small_error(source: str, n_tokens: int, n_docs: int, n_train: int, n_val: int, block_size: int) -> LmprobeError:
    return LmprobeError(
        f"data source {source!r} is too small: {n_tokens} tokens in {n_docs} documents gave "
        f"{n_train} train and {n_val} validation tokens, but block_size={block_size} "
        f"needs at least {block_size} in each; use more text, a smaller block_size or another val_fraction."
    )
