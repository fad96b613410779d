"""On-disk cache for derived data (trained tokenizers, tokenised corpora).

Why: tokenising a few million tokens or training a BPE takes tens of seconds on a laptop CPU;
a cache keyed by content fingerprints makes the second run start at once. Entries are folders
written under a temporary name and renamed into place, so concurrent processes (e.g. several
`accelerate launch` ranks) never see half-written data: the first rename wins, the rest reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "LMPROBE_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """cache_dir if given, else $LMPROBE_CACHE, else ~/.cache/lmprobe."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "lmprobe"


def fingerprint(parts: dict) -> str:
    """Stable hex digest of a JSON-serialisable description of what an entry depends on."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()


def cached_folder(entry: Path, build: Callable[[Path], None]) -> tuple[Path, bool]:
    """Return (entry, hit). On a miss, build(tmp) fills a temporary folder that becomes entry."""
    if entry.is_dir():
        return entry, True
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, entry)
        except OSError:
            if not entry.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return entry, False
