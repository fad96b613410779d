"""Where discovery reads its model and caches what it computed: RUN/analysis/discovery/.

A cache entry is a folder named by what it depends on (the checkpoint's files, the probe size,
the settings), written under a temporary name and renamed into place (lmprobe.cache), so a
second `lmprobe mine RUN --by repr` reuses the features and the clustering. A lone checkpoint
(no run directory) is analysed in a temporary folder and nothing is kept.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lmprobe.cache import cached_folder, fingerprint
from lmprobe.errors import LmprobeError

DISCOVERY_DIR = Path("analysis") / "discovery"


def choose_checkpoint(view, step: int | None) -> tuple[Path, int | None]:
    """(checkpoint folder, its step): RUN/checkpoints/step-N for `step`, else the view's own."""
    from lmprobe.train.checkpoint import CHECKPOINT_RE, list_checkpoints

    if step is None:
        checkpoint = Path(view.checkpoint)
        match = CHECKPOINT_RE.match(checkpoint.name)
        return checkpoint, int(match.group(1)) if match else None
    if view.run_dir is None:
        raise LmprobeError(f"--checkpoint-step {step} needs a run directory; {view.checkpoint} is a lone checkpoint")
    found = dict(list_checkpoints(view.run_dir))
    if step not in found:
        steps = ", ".join(str(s) for s in sorted(found)) or "none"
        raise LmprobeError(f"{view.run_dir} has no checkpoint at step {step} (checkpoints at steps: {steps})")
    return found[step], step


def checkpoint_fingerprint(checkpoint: Path) -> dict[str, Any]:
    """What identifies a checkpoint's weights: its name and its files' sizes and times."""
    files = sorted(p for p in Path(checkpoint).iterdir() if p.is_file()) if Path(checkpoint).is_dir() else []
    return {"name": Path(checkpoint).name,
            "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files
                      if p.suffix in (".safetensors", ".bin", ".json")]}


@dataclass
class Store:
    """The folder cache entries go in (None: compute in a temporary folder, keep nothing)."""

    root: Path | None
    _temporary: list = field(default_factory=list)

    @classmethod
    def for_view(cls, view) -> "Store":
        return cls(Path(view.run_dir) / DISCOVERY_DIR if view.run_dir is not None else None)

    @contextlib.contextmanager
    def entry(self, name: str, parts: dict[str, Any], build) -> Iterator[tuple[Path, bool]]:
        """(folder, hit): the cached folder for `parts`, built by build(tmp) on a miss."""
        digest = fingerprint(parts)[:12]
        if self.root is None:
            with tempfile.TemporaryDirectory(prefix="lmprobe-discovery-") as tmp:
                folder = Path(tmp) / name
                folder.mkdir()
                build(folder)
                yield folder, False
            return
        folder, hit = cached_folder(self.root / f"{name}-{digest}", build)
        yield folder, hit


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=1, default=_plain))


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
