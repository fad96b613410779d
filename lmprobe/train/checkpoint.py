"""Atomic checkpoints: a complete step-NNNNNN folder appears, or nothing does.

A checkpoint is built in a hidden temporary folder beside its final place and renamed into
place in one step, so a run killed mid-write leaves only a temporary folder that the next
save or resume removes. Pruning renames a checkpoint out of the listing before deleting it, so a
kill during pruning never leaves a gutted checkpoint that is still listed.

Layout: step-NNNNNN/ is the folder the Hugging Face Hub expects (config.json, model.safetensors,
tokenizer, README.md model card, lmprobe.json); the training state (optimiser, RNG, counters)
lives apart in step-NNNNNN/resume/, which `lmprobe push` never uploads. The state is written
with torch.save and read back with weights_only=True.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from lmprobe.errors import LmprobeError

CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
RESUME_DIR = "resume"
STATE_FILE = f"{RESUME_DIR}/training_state.pt"  # relative to the checkpoint folder
LEGACY_STATE_FILE = "training_state.pt"  # checkpoints written before resume/ existed
INFO_FILE = "lmprobe.json"


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, sorted by step."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = []
    for path in ckpt_dir.iterdir():
        match = CHECKPOINT_RE.match(path.name)
        if match and path.is_dir() and (path / INFO_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    write_model: Callable[[Path], None],
    state: dict[str, Any],
    info: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write checkpoints/step-NNNNNN atomically; `write_model(folder)` saves model files."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / checkpoint_name(step)
    tmp = ckpt_dir / f".{final.name}.tmp-{os.getpid()}"
    _remove_stale_temporaries(ckpt_dir)
    tmp.mkdir()
    write_model(tmp)
    (tmp / RESUME_DIR).mkdir(exist_ok=True)
    torch.save(state, tmp / STATE_FILE)
    (tmp / INFO_FILE).write_text(json.dumps({"step": step, **(info or {})}, indent=1))
    _fsync_tree(tmp)
    if final.exists():
        _remove_checkpoint(final)
    os.replace(tmp, final)
    _fsync_dir(ckpt_dir)
    if keep is not None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            _remove_checkpoint(old)
    return final


def state_path(ckpt: str | Path) -> Path:
    """Where a checkpoint's training state is (resume/, or the folder itself for old checkpoints)."""
    path = Path(ckpt) / STATE_FILE
    legacy = Path(ckpt) / LEGACY_STATE_FILE
    return legacy if not path.is_file() and legacy.is_file() else path


def load_training_state(ckpt: str | Path) -> dict[str, Any]:
    """The training state, or a one-line error for a missing, truncated or foreign file."""
    path = state_path(ckpt)
    if not path.is_file():
        raise LmprobeError(f"{ckpt} has no {STATE_FILE}; it cannot be resumed from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, a forbidden pickle
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise LmprobeError(f"{path} is damaged ({reason}); it cannot be resumed from") from None
    if not isinstance(state, dict):
        raise LmprobeError(f"{path} is not an lmprobe training state; it cannot be resumed from")
    return state


def read_info(ckpt: str | Path) -> dict[str, Any]:
    return json.loads((Path(ckpt) / INFO_FILE).read_text())


def set_aside(ckpt: Path) -> Path:
    """Move a damaged checkpoint out of the listing (kept, renamed *.damaged, for inspection)."""
    target = ckpt.with_name(f"{ckpt.name}.damaged")
    n = 1
    while target.exists():
        n += 1
        target = ckpt.with_name(f"{ckpt.name}.damaged-{n}")
    os.replace(ckpt, target)
    return target


def _remove_checkpoint(path: Path) -> None:
    """Unlist first (one rename), then delete: a kill in between leaves only a hidden folder."""
    doomed = path.with_name(f".{path.name}.tmp-removing")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_stale_temporaries(ckpt_dir: Path) -> None:
    for path in ckpt_dir.glob(".step-*.tmp-*"):
        shutil.rmtree(path, ignore_errors=True)


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
