"""The memory-mapped token store: the in-memory packing's blocks, built once, flat memory, and
never a half-built store taken for a complete one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lmprobe.lm.data.store as store_module  # noqa: E402
from lmprobe.lm.data import load_tokenizer, open_token_store, prepare_lm_data  # noqa: E402
from lmprobe.lm.data.store import STORE_DIR, token_dtype  # noqa: E402
from lmprobe.errors import LmprobeError  # noqa: E402


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def write_corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    """n_docs documents of 20-60 words, each recognisable by its own number word."""
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n_docs):
            words = " ".join(f"w{i}" for _ in range(int(rng.integers(20, 60))))
            handle.write(json.dumps({"text": f"Doc {i}: the {words}\n"}) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "corpus.jsonl", 40)


SETTINGS = {"block_size": 16, "val_fraction": 0.2, "seed": 0}


def _open(source, tokenizer, cache, **overrides):
    return open_token_store(str(source), tokenizer, **{**SETTINGS, "cache_dir": cache, "num_proc": 1, **overrides})


@pytest.mark.parametrize("overrides", [{}, {"seed": 3, "block_size": 7}, {"max_tokens": 500},
                                       {"num_proc": 2, "val_fraction": 0.5}])
def test_blocks_equal_the_in_memory_packing(corpus, gpt2, tmp_path, overrides):
    settings = {**SETTINGS, **overrides}
    memory = prepare_lm_data(str(corpus), gpt2, cache_dir=tmp_path / "mem",
                             **{k: v for k, v in settings.items() if k != "num_proc"})
    mapped = _open(corpus, gpt2, tmp_path / "store", **overrides)
    assert isinstance(mapped.train, np.memmap) or isinstance(mapped.train.base, np.memmap)
    assert mapped.train.dtype == np.uint16 and mapped.train.shape == memory.train.shape
    np.testing.assert_array_equal(mapped.train, memory.train)
    np.testing.assert_array_equal(mapped.val, memory.val)
    np.testing.assert_array_equal(mapped.train_documents, memory.train_documents)
    np.testing.assert_array_equal(mapped.val_documents, memory.val_documents)
    assert mapped.unigram_entropy_nats == memory.unigram_entropy_nats
    assert (mapped.n_source_tokens, mapped.n_train_tokens, mapped.n_val_tokens, mapped.vocab_size, mapped.eos_id) == (
        memory.n_source_tokens, memory.n_train_tokens, memory.n_val_tokens, memory.vocab_size, memory.eos_id)


def test_second_open_reuses_the_store(corpus, gpt2, tmp_path, monkeypatch):
    cold = _open(corpus, gpt2, tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("a stored corpus must not be read or tokenised again")

    monkeypatch.setattr(store_module, "iter_documents", no_reading)
    monkeypatch.setattr(store_module, "encode_window", no_reading)
    warm = _open(corpus, gpt2, tmp_path)
    np.testing.assert_array_equal(warm.train, cold.train)
    resplit = _open(corpus, gpt2, tmp_path, seed=5)  # a new split of the stored tokens
    assert set(resplit.val_documents) != set(cold.val_documents)
    assert len(list((tmp_path / STORE_DIR).iterdir())) == 1


def test_interrupted_build_is_not_taken_for_a_store(corpus, gpt2, tmp_path, monkeypatch):
    real = store_module.encode_window
    calls = []

    def dies_on_second_window(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C halfway through
        return real(*args, **kwargs)

    monkeypatch.setattr(store_module, "FIRST_WINDOW_CHARACTERS", 500)  # several windows
    monkeypatch.setattr(store_module, "encode_window", dies_on_second_window)
    with pytest.raises(KeyboardInterrupt):
        _open(corpus, gpt2, tmp_path)
    assert not any((tmp_path / STORE_DIR).iterdir())  # no entry, and the temporary folder is gone

    # a build killed outright leaves its hidden temporary folder: it is ignored, not read
    key_dir = tmp_path / STORE_DIR
    monkeypatch.setattr(store_module, "encode_window", real)
    complete = _open(corpus, gpt2, tmp_path / "ref")
    entry_name = next((tmp_path / "ref" / STORE_DIR).iterdir()).name
    stale = key_dir / f".{entry_name}.killed"
    stale.mkdir()
    (stale / "tokens.bin").write_bytes(b"\x00\x01" * 10)
    data = _open(corpus, gpt2, tmp_path)
    np.testing.assert_array_equal(data.train, complete.train)


def test_a_truncated_store_is_refused(corpus, gpt2, tmp_path):
    _open(corpus, gpt2, tmp_path)
    entry = next(p for p in (tmp_path / STORE_DIR).iterdir() if not p.name.startswith("."))
    tokens = entry / "tokens.bin"
    tokens.write_bytes(tokens.read_bytes()[:-2])
    with pytest.raises(LmprobeError, match="damaged.*delete it"):
        _open(corpus, gpt2, tmp_path)


def _anon_kib() -> int:
    """Anonymous resident memory (heap, arrays) of this process: file pages of a memmap are cache,
    not memory the process holds, so VmRSS would count what the kernel may drop at any time."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    pytest.skip("no RssAnon in /proc/self/status (not Linux)")


def _release_free_memory() -> None:
    """Hand the allocator's free memory back to the system, so that an array loaded later shows up
    as growth instead of reusing pages the build freed (glibc keeps them)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_memory_does_not_grow_with_corpus_size(gpt2, tmp_path):
    small = write_corpus(tmp_path / "small.jsonl", 2_500, seed=1)
    large = write_corpus(tmp_path / "large.jsonl", 10_000, seed=2)  # 4x the text
    cache = tmp_path / "cache"
    for source in (small, large):  # build first: only opening and reading is measured
        _open(source, gpt2, cache, block_size=64, val_fraction=0.05)

    def open_and_read(source: Path) -> tuple[int, int]:
        _release_free_memory()
        before = _anon_kib()
        data = _open(source, gpt2, cache, block_size=64, val_fraction=0.05)
        rng = np.random.default_rng(0)
        total = 0
        for _ in range(16):  # 16 training batches of 8 blocks, as train_batch reads them
            total += int(data.train[rng.integers(0, len(data.train), 8)].astype(np.int64).sum())
        grown = _anon_kib() - before
        assert total > 0
        return grown, data.n_train_tokens * data.train.dtype.itemsize // 1024

    small_growth, _ = open_and_read(small)
    large_growth, large_kib = open_and_read(large)
    assert large_kib > 1_500  # the large store's train tokens: ~2 MB that must not be loaded
    print(f"anonymous memory grew {small_growth} KiB (small), {large_growth} KiB (large, {large_kib} KiB of tokens)")
    assert large_growth < small_growth + large_kib // 4, (small_growth, large_growth, large_kib)


def test_token_dtype_fits_the_vocabulary():
    assert token_dtype(50_257) == np.uint16 and token_dtype(65_536) == np.uint16
    assert token_dtype(65_537) == np.uint32 and token_dtype(200_000) == np.uint32


def test_the_store_takes_a_streamed_source_without_a_cap(gpt2, tmp_path):
    """The in-memory path refuses an uncapped stream; the store accepts it (here: offline, so the
    hub is unreachable and the error says so in one line)."""
    with pytest.raises(LmprobeError) as excinfo:
        _open("openwebtext", gpt2, tmp_path)
    assert "max_tokens" not in str(excinfo.value) and "\n" not in str(excinfo.value)
    with pytest.raises(LmprobeError, match="max_tokens"):
        prepare_lm_data("openwebtext", gpt2, cache_dir=tmp_path, **SETTINGS)
