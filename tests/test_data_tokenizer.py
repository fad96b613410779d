"""Tokenizers: the bundled GPT-2 BPE, trained GPT-2-style BPEs (cached, deterministic), local folders."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import lmprobe.lm.data.tokenizer as tokenizer_module  # noqa: E402
from lmprobe.lm.data import load_tokenizer  # noqa: E402
from lmprobe.errors import LmprobeError  # noqa: E402

WORDS = "the cat sat on the mat and the dog ran to the house: the end\nof it was near".split(" ")


def write_corpus(path: Path, n_docs: int = 40, words_per_doc: int = 150, seed: int = 0) -> Path:
    rng = random.Random(seed)
    docs = (" ".join(rng.choice(WORDS) for _ in range(words_per_doc)) for _ in range(n_docs))
    path.write_text("\n<|endoftext|>\n".join(docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gpt2():
    return load_tokenizer("gpt2")


def test_bundled_gpt2_is_the_real_bpe(gpt2):
    assert len(gpt2) == 50257
    assert gpt2.encode("\n", add_special_tokens=False) == [198]
    assert gpt2.encode(" the", add_special_tokens=False) == [262]
    assert gpt2.eos_token == "<|endoftext|>" and gpt2.eos_token_id == 50256
    assert gpt2.encode("Hello world", add_special_tokens=False) == [15496, 995]


def test_bundled_gpt2_round_trips(gpt2):
    text = "Subject: Re: lmprobe\n\nBut to me it is obvious: the answer is 42 \u2014 caf\u00e9 \U0001f600\n"
    assert gpt2.decode(gpt2.encode(text, add_special_tokens=False)) == text


def test_trained_bpe_keeps_gpt2_single_tokens_and_round_trips(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    tok = load_tokenizer("bpe-300", source=str(corpus), cache_dir=tmp_path / "cache")
    assert 257 < len(tok) <= 300
    assert len(tok.encode("\n", add_special_tokens=False)) == 1
    assert len(tok.encode(" the", add_special_tokens=False)) == 1
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id is not None
    text = "the cat: the dog\nnew words \u00e9\u00e8 too"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text


def test_trained_bpe_is_deterministic_and_cached(tmp_path, monkeypatch):
    corpus = write_corpus(tmp_path / "corpus.txt", n_docs=60, seed=1)
    first = load_tokenizer("bpe-280", source=str(corpus), cache_dir=tmp_path / "a")
    again = load_tokenizer("bpe-280", source=str(corpus), cache_dir=tmp_path / "b")
    assert first.backend_tokenizer.to_str() == again.backend_tokenizer.to_str()

    def no_training(*args, **kwargs):
        raise AssertionError("a cached tokenizer must not read the corpus again")

    monkeypatch.setattr(tokenizer_module, "iter_documents", no_training)
    cached = load_tokenizer("bpe-280", source=str(corpus), cache_dir=tmp_path / "a")
    assert cached.backend_tokenizer.to_str() == first.backend_tokenizer.to_str()


def test_trained_bpe_cache_key_follows_corpus_and_size(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt")
    load_tokenizer("bpe-300", source=str(corpus), cache_dir=tmp_path / "c")
    load_tokenizer("bpe-290", source=str(corpus), cache_dir=tmp_path / "c")
    write_corpus(corpus, seed=5)
    load_tokenizer("bpe-300", source=str(corpus), cache_dir=tmp_path / "c")
    assert len(list((tmp_path / "c" / "tokenizers").iterdir())) == 3


def test_cache_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("LMPROBE_CACHE", str(tmp_path / "env-cache"))
    load_tokenizer("bpe-300", source=str(write_corpus(tmp_path / "corpus.txt")))
    assert any((tmp_path / "env-cache" / "tokenizers").iterdir())


def test_saved_tokenizer_folder_loads(tmp_path, gpt2):
    gpt2.save_pretrained(str(tmp_path / "tok"))
    tok = load_tokenizer(str(tmp_path / "tok"))
    assert tok.encode(" the", add_special_tokens=False) == [262]


def test_unknown_tokenizer_path(tmp_path):
    with pytest.raises(LmprobeError) as excinfo:
        load_tokenizer(str(tmp_path / "no-such-tokenizer"))
    message = str(excinfo.value)
    assert "\n" not in message and "no-such-tokenizer" in message and "bpe-<N>" in message


def test_folder_without_tokenizer(tmp_path):
    (tmp_path / "readme.txt").write_text("not a tokenizer", encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        load_tokenizer(str(tmp_path))
    assert "\n" not in str(excinfo.value) and "could not load a tokenizer" in str(excinfo.value)


def test_tokenizer_path_that_is_a_file(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(LmprobeError, match="is a file"):
        load_tokenizer(str(path))


def test_bpe_vocab_too_small(tmp_path):
    with pytest.raises(LmprobeError, match="at least"):
        load_tokenizer("bpe-100", source=str(write_corpus(tmp_path / "c.txt")), cache_dir=tmp_path)


def test_bpe_on_missing_source(tmp_path):
    with pytest.raises(LmprobeError, match="not 'sample'"):
        load_tokenizer("bpe-300", source=str(tmp_path / "missing"), cache_dir=tmp_path)


@pytest.mark.slow
def test_bundled_bpe_8192_single_tokens_and_cached(tmp_path, monkeypatch):
    """Trains on the whole sample once (~20-40 s on 2 cores); determinism is tested above on a
    small corpus."""
    first = load_tokenizer("bpe-8192", cache_dir=tmp_path)
    assert len(first) == 8192
    assert len(first.encode("\n", add_special_tokens=False)) == 1
    assert len(first.encode(" the", add_special_tokens=False)) == 1
    monkeypatch.setattr(tokenizer_module, "iter_documents", None)  # a cache hit reads no text
    second = load_tokenizer("bpe-8192", cache_dir=tmp_path)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
