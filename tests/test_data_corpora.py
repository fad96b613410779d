"""The data sources: the bundled sample, local files and folders, OpenWebText offline, bad input."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import lzma
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lmprobe.lm.data import iter_documents, source_fingerprint  # noqa: E402
from lmprobe.lm.data.corpora import SAMPLE_CORPUS, SAMPLE_SOURCES  # noqa: E402
from lmprobe.errors import LmprobeError  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- bundled sample


@pytest.fixture(scope="module")
def sources() -> dict:
    return json.loads(SAMPLE_SOURCES.read_text(encoding="utf-8"))


def test_sample_checksum_matches_sources_json(sources):
    assert hashlib.sha256(SAMPLE_CORPUS.read_bytes()).hexdigest() == sources["corpus"]["sha256"]
    assert SAMPLE_CORPUS.stat().st_size < 10_000_000


def test_sample_has_both_sources_and_matches_recorded_counts(sources):
    records = [json.loads(line) for line in lzma.open(SAMPLE_CORPUS, "rt", encoding="utf-8")]
    by_source = {s["name"]: s for s in sources["sources"]}
    assert set(by_source) == {"sotu", "spam-assassin"}
    assert {r["source"] for r in records} == set(by_source)
    for name, record in by_source.items():
        docs = [r for r in records if r["source"] == name]
        assert len(docs) == record["documents"]
        assert sum(len(r["text"]) for r in docs) == record["characters"]
    assert len(records) == sources["corpus"]["documents"]
    assert len({r["id"] for r in records}) == len(records)


def test_sample_size_is_a_few_million_gpt2_tokens(sources):
    assert 3_000_000 <= sources["corpus"]["gpt2_tokens"] <= 6_500_000
    assert sum(s["gpt2_tokens"] for s in sources["sources"]) == sources["corpus"]["gpt2_tokens"]


def test_sample_keeps_colon_contexts_and_clean_text():
    docs = list(iter_documents("sample", max_documents=400))
    assert len(docs) == 400
    text = "\n".join(iter_documents("sample"))
    assert text.count(":\n") > 1000  # e-mail headers and "wrote:" lines
    assert text.count(": the") > 50  # rarer, as in OpenWebText
    assert "\r" not in text and "\x00" not in text


def test_sample_fingerprint_is_content_hash(sources):
    assert source_fingerprint("sample")["sha256"] == sources["corpus"]["sha256"]


# ----------------------------------------------------------------------------- local sources


def test_txt_file_is_one_document_unless_separated(tmp_path):
    one = tmp_path / "one.txt"
    one.write_text("Subject: hello\n\nfirst paragraph\n\nsecond paragraph\n", encoding="utf-8")
    assert list(iter_documents(str(one))) == ["Subject: hello\n\nfirst paragraph\n\nsecond paragraph"]

    many = tmp_path / "many.txt"
    many.write_bytes(b"doc one\r\nline two\r\n<|endoftext|>\r\ndoc two\n<|endoftext|>\n\n<|endoftext|>doc three")
    assert list(iter_documents(str(many))) == ["doc one\nline two", "doc two", "doc three"]


def test_jsonl_file(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text('{"text": "alpha"}\n\n{"text": "beta", "meta": 1}\n{"text": "   "}\n', encoding="utf-8")
    assert list(iter_documents(str(path))) == ["alpha", "beta"]


def test_compressed_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl.xz"
    with lzma.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"text": "x: the y"}\n')
    assert list(iter_documents(str(path))) == ["x: the y"]


def test_folder_is_recursive_sorted_and_skips_other_files(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "2.txt").write_text("from b/2", encoding="utf-8")
    (tmp_path / "a.jsonl").write_text('{"text": "from a"}\n', encoding="utf-8")
    (tmp_path / "b" / "1.txt").write_text("from b/1", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.txt").write_text("ignored", encoding="utf-8")
    assert list(iter_documents(str(tmp_path))) == ["from a", "from b/1", "from b/2"]
    assert list(iter_documents(tmp_path, max_documents=2)) == ["from a", "from b/1"]


def test_local_fingerprint_changes_with_content(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one", encoding="utf-8")
    before = source_fingerprint(str(path))
    path.write_text("one two", encoding="utf-8")
    assert source_fingerprint(str(path)) != before


# ----------------------------------------------------------------------------- bad input


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_missing_path(tmp_path):
    with pytest.raises(LmprobeError) as excinfo:
        iter_documents(str(tmp_path / "nope.txt"))
    assert "nope.txt" in _one_line_error(excinfo)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text(" \n\n", encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        list(iter_documents(str(path)))
    assert "no text" in _one_line_error(excinfo)


def test_empty_folder_and_folder_without_text_files(tmp_path):
    with pytest.raises(LmprobeError) as excinfo:
        iter_documents(str(tmp_path))
    assert "no .txt or .jsonl" in _one_line_error(excinfo)
    (tmp_path / "data.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(LmprobeError):
        iter_documents(str(tmp_path))


def test_folder_of_empty_files(tmp_path):
    (tmp_path / "a.txt").write_text("", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        list(iter_documents(str(tmp_path)))
    assert "no text" in _one_line_error(excinfo)


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b\n", encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        iter_documents(str(path))
    assert "unsupported" in _one_line_error(excinfo)


@pytest.mark.parametrize("content, line, mentions", [
    ('{"text": "fine"}\n{"body": "no text here"}\n', "line 2", '"text"'),  # a line without "text"
    ('{"text": "fine"}\n\n{"text": oops}\n', "line 3", "JSON"),  # a line that is not JSON
])
def test_bad_jsonl_line_names_file_and_line(tmp_path, content, line, mentions):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(LmprobeError) as excinfo:
        list(iter_documents(str(path)))
    message = _one_line_error(excinfo)
    assert "bad.jsonl" in message and line in message and mentions in message


def test_openwebtext_offline_gives_one_line_error(monkeypatch):
    import datasets
    import huggingface_hub

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(LmprobeError) as excinfo:
        next(iter(iter_documents("openwebtext", max_documents=1)))
    message = _one_line_error(excinfo)
    assert message.startswith("could not load OpenWebText")
    assert "data.source=sample" in message


# ----------------------------------------------------------------------------- the builder


@pytest.fixture(scope="module")
def builder():
    spec = importlib.util.spec_from_file_location("build_sample_corpus", REPO / "scripts" / "build_sample_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_builder_cleaning_keeps_headers_drops_blobs(builder):
    blob = "\n".join(["QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9w"] * 4 + ["QUJD=="])
    raw = ("Subject: hi\r\nTo: you\r\n\r\nbody \x00text\r\n" + blob + "\r\n" + "x" * 2000 + "\r\nbye\r\n").encode()
    cleaned = builder.drop_blobs(builder.normalise(builder.decode_bytes(raw)))
    assert cleaned == "Subject: hi\nTo: you\n\nbody text\nbye"


def test_builder_decodes_legacy_encodings(builder):
    assert builder.decode_bytes("caf\u00e9".encode("utf-8")) == "caf\u00e9"
    assert builder.decode_bytes(b"now\x92s \xa3160") == "now\u2019s \u00a3160"
