"""On-disk cache for derived data (trained tokenizers, tokenised corpora).

Why: tokenising a few million tokens or training a BPE takes tens of seconds on a laptop CPU;
a cache keyed by content fingerprints makes the second run start at once. Entries are folders
written under a temporary name and renamed into place, so concurrent processes (e.g. several
`accelerate launch` ranks) never see half-written data: the first rename wins, the rest reuse it.
A temporary name carries its writer (.ENTRY.tmp-PID@HOST-XXXX), so the one a killed process left
behind is removed the next time its folder is used (see remove_stale_temporaries).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
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
    remove_stale_temporaries(entry.parent, legacy=True)  # a build killed before its rename
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-{os.getpid()}@{host_tag()}-", dir=entry.parent))
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


#: a temporary of a writer: .NAME.tmp-PID, or .NAME.tmp-PID@HOST-XXXX (a folder made by mkdtemp)
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>\d+)(?:@(?P<host>[0-9a-f]{8}))?(?:-[A-Za-z0-9_]+)?$")
#: a cache folder's temporary from before the writer was named: .ENTRY.XXXXXXXX (mkdtemp's suffix)
_LEGACY_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}$")
#: a temporary nobody has written to for this long is stale whoever made it (another machine's)
STALE_AGE_S = 24 * 3600


def host_tag() -> str:
    """8 hex digits naming this machine: a pid means something only on the machine that gave it."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None, legacy: bool = False) -> list[Path]:
    """Remove the temporaries in `folder` (of `name` only, if given) that a killed writer left: those
    of a process of this machine that no longer runs, and any not written to for STALE_AGE_S (a
    writer on another machine). `legacy`: also the unnamed temporaries of older cache builds, by age.
    Returns what was removed; a temporary that cannot be removed is left for the next time."""
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return []
    removed = []
    for path in entries:
        match = _TEMPORARY.match(path.name)
        if match is not None:
            if name is not None and match["name"] != name:
                continue
            local = match["host"] is None or match["host"] == host_tag()
            stale = (local and not _running(int(match["pid"]))) or _idle_for(path) > STALE_AGE_S
        elif legacy and name is None and _LEGACY_TEMPORARY.match(path.name):
            stale = _idle_for(path) > STALE_AGE_S
        else:
            continue
        if stale:
            try:
                shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            except FileNotFoundError:
                pass  # another process removed it first
            except OSError:
                continue
            removed.append(path)
    return removed


def _running(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's process, alive
        return True
    return True


def _idle_for(path: Path) -> float:
    """Seconds since anything in `path` (a file, or a folder and all it holds) was last written."""
    try:
        newest = path.lstat().st_mtime
        if path.is_dir() and not path.is_symlink():
            for child in path.rglob("*"):
                newest = max(newest, child.lstat().st_mtime)
    except OSError:
        return 0.0
    return time.time() - newest
