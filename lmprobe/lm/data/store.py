"""A memory-mapped token store: a corpus tokenised once, in parallel, into token files on disk.

Why: the in-memory path (lmprobe.lm.data.packing) holds every token as int32 in RAM, fine for the
bundled sample but 36 GB for all of OpenWebText. The store is nanoGPT's prepare.py idea:

1. *corpus tokens* (cache_dir/token-store/<key>/): the source's documents in source order,
   tokenised with `datasets.map` (num_proc processes) window by window, each followed by EOS,
   appended to ``tokens.bin`` (uint16 when the vocabulary fits, else uint32) with the document
   boundaries in ``offsets.npy``. Keyed by (source fingerprint, tokenizer content, max_tokens).
2. *a split* (<corpus entry>/splits/<key>/): the same seeded document-level train/validation split
   as the in-memory path, each split's documents concatenated in permuted order into
   ``train.bin`` / ``val.bin``, plus the train split's token counts (for the unigram entropy).
   Keyed by (seed, val_fraction); a new seed re-splits without re-tokenising.

Opening a store maps the files (np.memmap): blocks are a [n_blocks, block_size] view, so memory
stays flat whatever the corpus size, and the blocks equal the in-memory packing exactly. Both
levels are built in a temporary folder renamed into place (lmprobe.cache.cached_folder):
an interrupted build leaves only a hidden temporary folder, never an entry that looks complete,
and every open checks the file sizes against the entry's meta.json.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lmprobe.cache import cache_root, cached_folder, fingerprint
from lmprobe.lm.data.corpora import iter_documents, source_fingerprint
from lmprobe.lm.data.packing import (
    PackedData, check_arguments, single_document_error, split_documents, too_small_error,
)
from lmprobe.lm.data.tokenizer import tokenizer_fingerprint
from lmprobe.errors import LmprobeError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

STORE_VERSION = 1
STORE_DIR = "token-store"
FIRST_WINDOW_CHARACTERS = 1 << 20  # windows start small (a small max_tokens reads little) ...
MAX_WINDOW_CHARACTERS = 1 << 26  # ... and double up to 64M characters of text per datasets.map
COPY_BUFFER_TOKENS = 1 << 23  # split files are written 8M tokens at a time


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (GPT-2's 50,257 do), else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def default_num_proc() -> int:
    """Tokenisation processes when none are asked for: the CPUs this process may use, at most 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def open_token_store(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    block_size: int,
    val_fraction: float,
    seed: int,
    max_tokens: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> PackedData:
    """`prepare_lm_data`'s result, memory-mapped from the token store (built on first use).

    Same documents, split and blocks as `prepare_lm_data`; train/val are read-only
    [n_blocks, block_size] views of uint16/uint32 files. max_tokens is optional even for a
    streamed source (the store holds any size); num_proc defaults to `default_num_proc()`.
    """
    source = os.fspath(source)
    check_arguments(source, block_size, val_fraction, max_tokens, require_cap=False)
    if num_proc is not None and num_proc < 1:
        raise LmprobeError(f"num_proc must be a positive integer or None, got {num_proc!r}.")
    eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise LmprobeError("the tokenizer has no EOS token; documents need one as a separator.")
    corpus = corpus_tokens(source, tokenizer, max_tokens=max_tokens, cache_dir=cache_dir, num_proc=num_proc)
    corpus_meta = read_meta(corpus)
    n_docs = corpus_meta["documents"]
    if n_docs < 2:
        raise single_document_error(source, n_docs)
    split = split_tokens(corpus, val_fraction=val_fraction, seed=seed)
    split_meta = read_meta(split)
    dtype = np.dtype(corpus_meta["dtype"])
    n_train_stream, n_val_stream = split_meta["train_tokens"], split_meta["val_tokens"]
    if n_train_stream < block_size or n_val_stream < block_size:
        raise too_small_error(source, corpus_meta["tokens"], n_docs, n_train_stream, n_val_stream, block_size)
    train = _blocks(split / "train.bin", dtype, n_train_stream, block_size)
    val = _blocks(split / "val.bin", dtype, n_val_stream, block_size)
    return PackedData.from_blocks(
        train, val, tokenizer, source=source,
        unigram_entropy_nats=_train_entropy(split, train, n_train_stream, dtype, len(tokenizer)),
        train_documents=np.load(split / "train_documents.npy", mmap_mode="r"),
        val_documents=np.load(split / "val_documents.npy", mmap_mode="r"),
        n_source_tokens=corpus_meta["tokens"])


# ----------------------------------------------------------------------------- level 1: corpus tokens


def corpus_tokens(
    source: str,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_tokens: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    num_proc: int | None = None,
) -> Path:
    """The folder holding `source` tokenised in source order (built on first use)."""
    key = fingerprint(
        {
            "version": STORE_VERSION,
            "source": source_fingerprint(source),
            "tokenizer": tokenizer_fingerprint(tokenizer),
            "max_tokens": max_tokens,
        }
    )
    entry = cache_root(cache_dir) / STORE_DIR / key[:32]

    def build(folder: Path) -> None:
        write_corpus_tokens(folder, source, tokenizer, max_tokens=max_tokens,
                            num_proc=num_proc or default_num_proc(), key=key)

    folder, _ = cached_folder(entry, build)
    _check_complete(folder, {"tokens.bin": "tokens"})
    return folder


def write_corpus_tokens(folder: Path, source: str, tokenizer: PreTrainedTokenizerBase, *,
                        max_tokens: int | None, num_proc: int, key: str) -> None:
    """Tokenise window after window of documents and append them to folder/tokens.bin."""
    dtype = token_dtype(len(tokenizer))
    encoder = DocumentEncoder.of(tokenizer)
    lengths: list[np.ndarray] = []
    total = 0
    with open(folder / "tokens.bin", "wb") as out:
        for window in _windows(iter_documents(source)):
            flat, lens = encode_window(window, encoder, dtype, num_proc)
            if max_tokens is not None and total + len(flat) >= max_tokens:
                flat, lens = _cap(flat, lens, max_tokens - total)
                out.write(flat.tobytes())
                lengths.append(lens)
                total += len(flat)
                break
            out.write(flat.tobytes())
            lengths.append(lens)
            total += len(flat)
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(all_lengths) + 1, dtype=np.int64)
    np.cumsum(all_lengths, out=offsets[1:])
    np.save(folder / "offsets.npy", offsets, allow_pickle=False)
    meta = {"source": source, "documents": len(all_lengths), "tokens": int(total), "dtype": dtype.name,
            "vocab_size": len(tokenizer), "max_tokens": max_tokens, "key": key, "version": STORE_VERSION}
    _write_meta(folder, meta)


class DocumentEncoder:
    """A picklable `datasets.map` function: texts -> token ids with EOS appended.

    It carries the tokenizer as its JSON (the Rust backend, no truncation) and rebuilds it once
    per worker process; tokenizers without a Rust backend are called as they are.
    """

    def __init__(self, backend_json: str | None, eos_id: int, tokenizer=None):
        self.backend_json, self.eos_id, self._tokenizer = backend_json, eos_id, tokenizer
        self._backend = None

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase) -> "DocumentEncoder":
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return cls(backend.to_str(), tokenizer.eos_token_id)
        return cls(None, tokenizer.eos_token_id, tokenizer)

    def __getstate__(self) -> dict:
        return {"backend_json": self.backend_json, "eos_id": self.eos_id, "_tokenizer": self._tokenizer,
                "_backend": None}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        texts = batch["text"]
        if self.backend_json is None:
            ids = self._tokenizer(texts, add_special_tokens=False)["input_ids"]
        else:
            if self._backend is None:
                from tokenizers import Tokenizer

                self._backend = Tokenizer.from_str(self.backend_json)
                self._backend.no_truncation()
                self._backend.no_padding()
            ids = [enc.ids for enc in self._backend.encode_batch_fast(texts, add_special_tokens=False)]
        return {"ids": [[*row, self.eos_id] for row in ids]}


def encode_window(texts: list[str], encoder: DocumentEncoder, dtype: np.dtype,
                  num_proc: int) -> tuple[np.ndarray, np.ndarray]:
    """(flat ids, per-document lengths) of a window of documents, through `datasets.map`."""
    import datasets
    import pyarrow.compute as pc

    processes = min(num_proc, max(1, len(texts) // 64)) if num_proc > 1 else None
    quiet = not datasets.are_progress_bars_disabled()
    if quiet:
        datasets.disable_progress_bars()
    try:
        encoded = datasets.Dataset.from_dict({"text": texts}).map(
            encoder, batched=True, batch_size=256, num_proc=processes, remove_columns=["text"],
            features=datasets.Features({"ids": datasets.Sequence(datasets.Value(dtype.name))}),
            new_fingerprint="lmprobe-token-store",  # nothing to cache: skip hashing the tokenizer
        )
    finally:
        if quiet:
            datasets.enable_progress_bars()
    column = encoded.data.column("ids").combine_chunks()
    flat = np.asarray(column.flatten().to_numpy(zero_copy_only=False), dtype=dtype)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return flat, lengths


def _cap(flat: np.ndarray, lengths: np.ndarray, room: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `room` tokens, as `encode_documents` cuts them: the last document may be cut."""
    ends = np.cumsum(lengths)
    last = int(np.searchsorted(ends, room))  # first document reaching the cap
    kept = lengths[: last + 1].copy()
    kept[-1] = room - (ends[last - 1] if last else 0)
    return flat[:room], kept[kept > 0]


def _windows(docs: Iterator[str]) -> Iterator[list[str]]:
    """Documents in windows of doubling size (bounded memory, little over-reading under a cap)."""
    window: list[str] = []
    chars, limit = 0, FIRST_WINDOW_CHARACTERS
    for doc in docs:
        window.append(doc)
        chars += len(doc)
        if chars >= limit:
            yield window
            window, chars, limit = [], 0, min(2 * limit, MAX_WINDOW_CHARACTERS)
    if window:
        yield window


# ----------------------------------------------------------------------------- level 2: a split


def split_tokens(corpus: Path, *, val_fraction: float, seed: int) -> Path:
    """The folder holding `corpus` split by document into train.bin and val.bin (built on first use)."""
    key = fingerprint({"version": STORE_VERSION, "val_fraction": float(val_fraction), "seed": int(seed)})
    entry = corpus / "splits" / key[:16]

    def build(folder: Path) -> None:
        write_split(folder, corpus, val_fraction=val_fraction, seed=seed)

    folder, _ = cached_folder(entry, build)
    _check_complete(folder, {"train.bin": "train_tokens", "val.bin": "val_tokens"})
    return folder


def write_split(folder: Path, corpus: Path, *, val_fraction: float, seed: int) -> None:
    meta = read_meta(corpus)
    dtype = np.dtype(meta["dtype"])
    offsets = np.load(corpus / "offsets.npy")
    tokens = _memmap(corpus / "tokens.bin", dtype, meta["tokens"])
    train_docs, val_docs = split_documents(meta["documents"], val_fraction, seed)
    counts = np.zeros(meta["vocab_size"], dtype=np.int64)
    n_train = _write_documents(folder / "train.bin", tokens, offsets, train_docs, counts)
    n_val = _write_documents(folder / "val.bin", tokens, offsets, val_docs, None)
    np.save(folder / "train_documents.npy", train_docs, allow_pickle=False)
    np.save(folder / "val_documents.npy", val_docs, allow_pickle=False)
    np.save(folder / "train_counts.npy", counts, allow_pickle=False)
    _write_meta(folder, {"train_tokens": n_train, "val_tokens": n_val, "seed": int(seed),
                         "val_fraction": float(val_fraction), "dtype": dtype.name, "version": STORE_VERSION})


def _write_documents(path: Path, tokens: np.ndarray, offsets: np.ndarray, docs: np.ndarray,
                     counts: np.ndarray | None) -> int:
    """Append documents `docs` of `tokens` to `path` in that order; add their token counts."""
    total = 0
    with open(path, "wb") as out:

        def flush(pieces: list[np.ndarray]) -> None:
            chunk = np.concatenate(pieces)
            out.write(chunk.tobytes())
            if counts is not None:
                np.add(counts, np.bincount(chunk, minlength=len(counts)), out=counts)

        pieces, buffered = [], 0
        for i in docs:
            piece = tokens[offsets[i] : offsets[i + 1]]
            pieces.append(piece)
            buffered += len(piece)
            total += len(piece)
            if buffered >= COPY_BUFFER_TOKENS:
                flush(pieces)
                pieces, buffered = [], 0
        if pieces:
            flush(pieces)
    return total


# ----------------------------------------------------------------------------- opening


def _blocks(path: Path, dtype: np.dtype, n_tokens: int, block_size: int) -> np.ndarray:
    n_blocks = n_tokens // block_size
    return _memmap(path, dtype, n_blocks * block_size).reshape(n_blocks, block_size)


def _memmap(path: Path, dtype: np.dtype, n_tokens: int) -> np.ndarray:
    if n_tokens == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=(n_tokens,))


def _train_entropy(split: Path, train: np.ndarray, n_stream: int, dtype: np.dtype, vocab_size: int) -> float:
    """Unigram entropy of the train blocks: the split's counts minus the dropped remainder's."""
    counts = np.load(split / "train_counts.npy")
    rest = _memmap(split / "train.bin", dtype, n_stream)[train.size :]
    counts = counts - np.bincount(np.asarray(rest, dtype=np.int64), minlength=len(counts))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def read_meta(folder: Path) -> dict:
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise LmprobeError(f"token store {folder} is damaged (no readable meta.json); delete it and rerun.") from None


def _write_meta(folder: Path, meta: dict) -> None:
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _check_complete(folder: Path, files: dict[str, str]) -> None:
    """Every token file has the size meta.json promises (a truncated copy is refused, not read)."""
    meta = read_meta(folder)
    itemsize = np.dtype(meta["dtype"]).itemsize
    for name, count_key in files.items():
        path = folder / name
        expected = meta[count_key] * itemsize
        size = path.stat().st_size if path.is_file() else None
        if size != expected:
            raise LmprobeError(
                f"token store {folder} is damaged ({name} has {size} bytes, expected {expected}); delete it and rerun."
            )
