"""prepare_lm_data: block shapes, seeded document-level splits, caching, sources, bad input."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lmprobe.lm.data.packing as packing_module  # noqa: E402
from lmprobe.lm.data import PackedData, load_tokenizer, prepare_lm_data, unigram_entropy_nats  # noqa: E402
from lmprobe.errors import LmprobeError  # noqa: E402


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


@pytest.fixture
def jsonl_corpus(tmp_path) -> Path:
    """40 documents, each recognisable by its own number word, of 20-60 words."""
    path = tmp_path / "corpus.jsonl"
    rng = np.random.default_rng(0)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(40):
            words = " ".join(f"w{i}" for _ in range(int(rng.integers(20, 60))))
            handle.write(json.dumps({"text": f"Doc {i}: the {words}\n"}) + "\n")
    return path


def _prepare(source, tokenizer, tmp_path, **overrides) -> PackedData:
    settings = {"block_size": 16, "val_fraction": 0.2, "seed": 0, "cache_dir": tmp_path / "cache"}
    settings.update(overrides)
    return prepare_lm_data(str(source), tokenizer, **settings)


def test_shapes_and_dtypes(jsonl_corpus, gpt2, tmp_path):
    data = _prepare(jsonl_corpus, gpt2, tmp_path)
    for blocks in (data.train, data.val):
        assert blocks.dtype == np.int32 and blocks.ndim == 2 and blocks.shape[1] == 16
        assert blocks.flags["C_CONTIGUOUS"]
    assert data.n_train_tokens == data.train.size and data.n_val_tokens == data.val.size
    assert data.vocab_size == 50257 and data.eos_id == 50256 and data.block_size == 16
    assert data.n_documents == 40 and len(data.val_documents) == 8
    assert (data.train == data.eos_id).sum() > 0
    assert 0 < data.unigram_entropy_nats < math.log(data.vocab_size)


def test_deterministic_given_seed(jsonl_corpus, gpt2, tmp_path):
    a = _prepare(jsonl_corpus, gpt2, tmp_path, cache_dir=tmp_path / "c1")
    b = _prepare(jsonl_corpus, gpt2, tmp_path, cache_dir=tmp_path / "c2")
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert np.array_equal(a.val_documents, b.val_documents)
    assert a.unigram_entropy_nats == b.unigram_entropy_nats


def test_different_seeds_split_differently(jsonl_corpus, gpt2, tmp_path):
    a = _prepare(jsonl_corpus, gpt2, tmp_path, seed=0)
    b = _prepare(jsonl_corpus, gpt2, tmp_path, seed=1)
    assert set(a.val_documents) != set(b.val_documents)


def test_train_and_val_are_disjoint_documents(jsonl_corpus, gpt2, tmp_path):
    data = _prepare(jsonl_corpus, gpt2, tmp_path)
    assert not set(data.train_documents) & set(data.val_documents)
    assert sorted([*data.train_documents, *data.val_documents]) == list(range(40))
    # Every document's marker word appears only in the split it was assigned to.
    train_text = gpt2.decode(data.train.ravel())
    val_text = gpt2.decode(data.val.ravel())
    for i in data.val_documents:
        assert f" w{i} " not in train_text
    for i in data.train_documents:
        assert f" w{i} " not in val_text


def test_blocks_are_the_concatenated_documents_with_eos(jsonl_corpus, gpt2, tmp_path):
    data = _prepare(jsonl_corpus, gpt2, tmp_path)
    lines = jsonl_corpus.read_text(encoding="utf-8").splitlines()
    texts = [json.loads(line)["text"].strip() for line in lines]
    stream = []
    for i in data.train_documents:
        stream += gpt2.encode(texts[i], add_special_tokens=False) + [gpt2.eos_token_id]
    n = data.train.size
    assert data.train.ravel().tolist() == stream[:n]
    assert len(stream) - n < data.block_size


def test_warm_call_uses_the_cache(jsonl_corpus, gpt2, tmp_path, monkeypatch):
    cold = _prepare(jsonl_corpus, gpt2, tmp_path)

    def no_reading(*args, **kwargs):
        raise AssertionError("a cached corpus must not be tokenised again")

    monkeypatch.setattr(packing_module, "iter_documents", no_reading)
    warm = _prepare(jsonl_corpus, gpt2, tmp_path, block_size=8, seed=3)  # packing is redone
    assert warm.block_size == 8 and warm.n_documents == cold.n_documents


def test_max_tokens_caps_the_source(jsonl_corpus, gpt2, tmp_path):
    data = _prepare(jsonl_corpus, gpt2, tmp_path, max_tokens=500)
    assert data.n_source_tokens == 500
    assert data.n_train_tokens + data.n_val_tokens <= 500


def test_txt_and_folder_sources(tmp_path, gpt2):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    for i in range(6):
        (folder / ("sub" if i % 2 else ".") / f"{i}.txt").write_text(f"Note {i}: the " + "text " * 30, encoding="utf-8")
    data = _prepare(folder, gpt2, tmp_path, val_fraction=0.3)
    assert data.n_documents == 6 and len(data.val_documents) == 2

    single = tmp_path / "one.txt"
    single.write_text("<|endoftext|>".join(f"Part {i}: the " + "words " * 20 for i in range(5)), encoding="utf-8")
    data = _prepare(single, gpt2, tmp_path, val_fraction=0.1)
    assert data.n_documents == 5 and len(data.val_documents) == 1


def test_bundled_sample_with_a_token_cap(gpt2, tmp_path):
    data = _prepare("sample", gpt2, tmp_path, block_size=128, val_fraction=0.1, max_tokens=50_000)
    assert data.source == "sample" and data.n_source_tokens == 50_000
    assert data.train.shape[1] == 128 and len(data.val) >= 1


def test_unigram_entropy():
    assert unigram_entropy_nats(np.array([[0, 1, 2, 3]]), 10) == pytest.approx(math.log(4))
    assert unigram_entropy_nats(np.array([5, 5, 5]), 10) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- bad input


def test_corpus_too_small_says_how_many_tokens(tmp_path, gpt2):
    path = tmp_path / "tiny.jsonl"
    path.write_text('{"text": "a few words"}\n{"text": "and a few more"}\n', encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        _prepare(path, gpt2, tmp_path, block_size=64, val_fraction=0.5)
    message = str(excinfo.value)
    assert "\n" not in message and "too small" in message
    assert "block_size=64" in message and "tokens in 2 documents" in message


def test_single_document_cannot_be_split(tmp_path, gpt2):
    path = tmp_path / "one.txt"
    path.write_text("only one document " * 100, encoding="utf-8")
    with pytest.raises(LmprobeError, match="at least 2"):
        _prepare(path, gpt2, tmp_path)


def test_streaming_source_needs_max_tokens(gpt2, tmp_path):
    with pytest.raises(LmprobeError, match="max_tokens"):
        _prepare("openwebtext", gpt2, tmp_path)


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        ({"block_size": 0}, "block_size"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_settings(jsonl_corpus, gpt2, tmp_path, overrides, pattern):
    with pytest.raises(LmprobeError, match=pattern):
        _prepare(jsonl_corpus, gpt2, tmp_path, **overrides)


def test_missing_and_empty_sources(tmp_path, gpt2):
    with pytest.raises(LmprobeError, match="existing path"):
        _prepare(tmp_path / "missing.jsonl", gpt2, tmp_path)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(LmprobeError, match="no text"):
        _prepare(empty, gpt2, tmp_path)
