"""Where training text comes from: the bundled sample, OpenWebText (streamed), or local files.

A *source* is a string:

- ``"sample"``: the corpus bundled in the package (State of the Union addresses + 2002
  e-mails, ~5M GPT-2 tokens; see ``lmprobe/assets/sample/SOURCES.json``). Needs no network.
- ``"openwebtext"``: ``Skylion007/openwebtext`` from the Hugging Face hub, streamed with
  ``datasets`` (a parquet-backed repo, so no remote code). Needs network.
- a path to a ``.txt`` file, a ``.jsonl`` file (also ``.jsonl.gz`` / ``.jsonl.xz``), or a folder
  of such files (searched recursively, sorted by relative path, hidden files skipped).
  A ``.txt`` file is one document, or several if it contains the GPT-2 separator
  ``<|endoftext|>`` (documents are the pieces between separators). A ``.jsonl`` file holds one
  JSON object per line with a string field ``"text"``; blank lines are skipped.
  Use ``./sample`` for a local folder that happens to be called ``sample``.

Documents are yielded as str with surrounding whitespace stripped; empty ones are skipped. Text is decoded as
UTF-8 (undecodable bytes become U+FFFD) with line endings normalised to ``\\n``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import lzma
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from lmprobe.errors import LmprobeError, first_line

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
SAMPLE_CORPUS = ASSETS_DIR / "sample" / "corpus.jsonl.xz"
SAMPLE_SOURCES = ASSETS_DIR / "sample" / "SOURCES.json"
OPENWEBTEXT_DATASET = "Skylion007/openwebtext"
DOCUMENT_SEPARATOR = "<|endoftext|>"
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.xz")
TEXT_SUFFIXES = (".txt",)
STREAMING_SOURCES = frozenset({"openwebtext"})


def is_streaming(source: str) -> bool:
    """Streaming sources are unbounded for our purposes: callers must cap how much they take."""
    return source in STREAMING_SOURCES


def iter_documents(source: str, *, max_documents: int | None = None) -> Iterator[str]:
    """Yield the documents of `source` in a fixed order (see the module docstring).

    Bad input (missing path, unsupported file, a folder without text files, unreachable hub)
    raises LmprobeError here, eagerly; a source that turns out to contain no text raises it
    when iteration ends.
    """
    source = os.fspath(source)
    if max_documents is not None and max_documents < 1:
        raise LmprobeError(f"max_documents must be a positive integer or None, got {max_documents!r}.")
    if source == "sample":
        docs = _read_jsonl(_bundled_sample())
    elif source == "openwebtext":
        docs = _stream_openwebtext()
    else:
        docs = _local_documents(_local_files(source))
    return _nonempty(_limit(docs, max_documents), source)


def source_fingerprint(source: str) -> dict:
    """What a cache entry derived from `source` depends on (content hash or file stats)."""
    source = os.fspath(source)
    if source == "sample":
        return {"kind": "sample", "sha256": _file_sha256(_bundled_sample())}
    if source == "openwebtext":
        return {"kind": "hub", "dataset": OPENWEBTEXT_DATASET}
    files = _local_files(source)
    root = Path(source).expanduser().resolve()
    stats = []
    for path in files:
        st = path.stat()
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        stats.append([rel, st.st_size, st.st_mtime_ns])
    return {"kind": "local", "path": str(root), "files": stats}


# ----------------------------------------------------------------------------- bundled sample


def _bundled_sample() -> Path:
    if not SAMPLE_CORPUS.is_file():
        raise LmprobeError(
            f"the bundled sample corpus is missing ({SAMPLE_CORPUS}); reinstall lmprobe or run "
            "scripts/build_sample_corpus.py."
        )
    return SAMPLE_CORPUS


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    st = path.stat()
    return _sha256_cached(str(path), st.st_size, st.st_mtime_ns)


# ----------------------------------------------------------------------------- OpenWebText


def _stream_openwebtext() -> Iterator[str]:
    """Stream the hub copy; any failure to reach it becomes one LmprobeError line."""
    try:
        import datasets

        dataset = datasets.load_dataset(OPENWEBTEXT_DATASET, split="train", streaming=True)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for "unreachable"
        raise _openwebtext_error(exc) from exc
    return _guarded_stream(dataset)


def _guarded_stream(dataset: Iterable[dict]) -> Iterator[str]:
    try:
        for record in dataset:
            yield record["text"]
    except Exception as exc:  # noqa: BLE001 - network errors surface lazily while streaming
        raise _openwebtext_error(exc) from exc


def _openwebtext_error(exc: BaseException) -> LmprobeError:
    reason = first_line(exc, 200)
    return LmprobeError(
        f"could not load OpenWebText ({OPENWEBTEXT_DATASET}) from the Hugging Face hub (offline?): "
        f"{reason}. Use data.source=sample or a local path."
    )


# ----------------------------------------------------------------------------- local files


def _is_supported(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(TEXT_SUFFIXES) or name.endswith(JSONL_SUFFIXES)


def _local_files(source: str) -> list[Path]:
    """The files a local source names, in reading order; errors for anything unusable."""
    path = Path(source).expanduser()
    if not path.exists():
        raise LmprobeError(
            f"data source {source!r} is not 'sample', 'openwebtext' or an existing path; "
            "check the path (a .txt/.jsonl file or a folder of them)."
        )
    if path.is_file():
        if not _is_supported(path):
            raise LmprobeError(
                f"data file {source} has an unsupported type; use .txt, .jsonl (.jsonl.gz, .jsonl.xz) "
                "or a folder of them."
            )
        return [path]
    files = sorted(
        (
            p
            for p in path.rglob("*")
            if p.is_file() and _is_supported(p) and not any(part.startswith(".") for part in p.relative_to(path).parts)
        ),
        key=lambda p: p.relative_to(path).as_posix(),
    )
    if not files:
        raise LmprobeError(f"data folder {source} contains no .txt or .jsonl files; add some text files.")
    return files


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    opener = gzip.open if name.endswith(".gz") else lzma.open if name.endswith(".xz") else open
    return opener(path, "rt", encoding="utf-8", errors="replace", newline=None)


def _local_documents(files: list[Path]) -> Iterator[str]:
    for path in files:
        if path.name.lower().endswith(JSONL_SUFFIXES):
            yield from _read_jsonl(path)
        else:
            yield from _read_txt(path)


def _read_txt(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        text = handle.read()
    yield from text.split(DOCUMENT_SEPARATOR)


def _read_jsonl(path: Path) -> Iterator[str]:
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LmprobeError(
                    f"{path}, line {lineno}: not valid JSON ({exc.msg}); each line must be an object "
                    'with a "text" field.'
                ) from None
            text = record.get("text") if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise LmprobeError(
                    f'{path}, line {lineno}: no "text" string field; each line must be an object '
                    'like {"text": "..."}.'
                )
            yield text.replace("\r\n", "\n").replace("\r", "\n")


# ----------------------------------------------------------------------------- helpers


def _limit(docs: Iterator[str], max_documents: int | None) -> Iterator[str]:
    """Strip documents, skip empty ones, stop after max_documents without reading one more."""
    count = 0
    for doc in docs:
        doc = doc.strip()
        if doc:
            yield doc
            count += 1
            if max_documents is not None and count >= max_documents:
                return


def _nonempty(docs: Iterator[str], source: str) -> Iterator[str]:
    any_doc = False
    for doc in docs:
        any_doc = True
        yield doc
    if not any_doc:
        raise LmprobeError(f"data source {source!r} contains no text; add documents or pick another source.")
