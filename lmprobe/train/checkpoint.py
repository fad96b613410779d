"""Atomic checkpoints: a complete step-NNNNNN folder appears, or nothing does.

A checkpoint is built in a hidden staging folder beside its final place and renamed into place
in one step, so a run killed mid-write leaves only a staging folder that the next save or resume
removes. Pruning renames a checkpoint out of the listing before deleting it, so a kill during
pruning never leaves a gutted checkpoint that is still listed.

Layout: step-NNNNNN/ is the folder the Hugging Face Hub expects (config.json, model.safetensors,
tokenizer, README.md model card, lmprobe.json); the training state lives apart in
step-NNNNNN/resume/, written by Accelerate's `save_state` (optimizer.bin, one
random_states_<rank>.pkl per process, the grad scaler; under FSDP the sharded model and optimizer
folders) and never uploaded by `lmprobe push`. The learning rate is a function of the step and
the config, so there is no scheduler state to keep. Everything is read back with weights_only=True.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from lmprobe.errors import LmprobeError, first_line, write_failure

CHECKPOINT_RE = re.compile(r"^step-(\d+)$")
RESUME_DIR = "resume"
OPTIMIZER_FILE = "optimizer.bin"  # Accelerate's names, inside resume/
SHARDED_OPTIMIZER_DIR = "optimizer_0"  # FSDP's sharded optimizer state
RNG_FILE = "random_states_{rank}.pkl"
LEGACY_STATE_FILES = (f"{RESUME_DIR}/training_state.pt", "training_state.pt")  # lmprobe 0.x before save_state
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


def incomplete_checkpoints(run_dir: str | Path) -> list[Path]:
    """step-NNNNNN folders without lmprobe.json: never written by a save (those appear whole), so
    edited or copied in part; not listed, and set aside by a resume rather than overwritten."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    return sorted(p for p in ckpt_dir.iterdir()
                  if CHECKPOINT_RE.match(p.name) and p.is_dir() and not (p / INFO_FILE).is_file())


def latest_checkpoint(run_dir: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


# ----------------------------------------------------------------------------- writing
def begin_checkpoint(run_dir: str | Path, step: int) -> Path:
    """An empty staging folder for step's checkpoint (main process; the run lock makes it the only writer)."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(ckpt_dir)
    staging = staging_folder(run_dir, step)
    staging.mkdir()
    return staging


def staging_folder(run_dir: str | Path, step: int) -> Path:
    """Where step's checkpoint is built: the same path on every process of a launch."""
    return Path(run_dir) / "checkpoints" / f".{checkpoint_name(step)}.tmp"


@contextmanager
def checkpoint_writes(staging: Path) -> Iterator[None]:
    """Around the writing of a checkpoint: a write that fails (a full disk, a file-size limit) is
    raised as the OSError it stands for, whichever library wrote (torch.save's RuntimeError,
    safetensors' SafetensorError, Accelerate's save_state), so it ends in the one line an OSError
    gets; the unfinished staging folder is removed (the checkpoints already listed are untouched).
    Any other error passes through as it is."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - sorted below: only write failures are translated
        failure = write_failure(exc, staging)
        if failure is None:
            raise
        shutil.rmtree(staging, ignore_errors=True)  # frees the space it took; never listed
        if failure is exc:
            raise
        raise failure from None


def commit_checkpoint(run_dir: str | Path, step: int, info: dict[str, Any] | None = None,
                      keep: int | None = None) -> Path:
    """Seal the staging folder (lmprobe.json, fsync) and rename it into the listing; prune to `keep`."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    staging, final = staging_folder(run_dir, step), ckpt_dir / checkpoint_name(step)
    (staging / INFO_FILE).write_text(json.dumps({"step": step, **(info or {})}, indent=1))
    _umask_modes(staging)
    _fsync_tree(staging)
    if final.exists():
        _remove_checkpoint(final)
    os.replace(staging, final)
    _fsync_dir(ckpt_dir)
    if keep is not None:
        for _, old in list_checkpoints(run_dir)[:-keep]:
            _remove_checkpoint(old)
    return final


def save_checkpoint(run_dir: str | Path, step: int, write: Callable[[Path], None],
                    info: dict[str, Any] | None = None, keep: int | None = None) -> Path:
    """One process's checkpoint: `write(folder)` fills the staging folder, which then appears atomically."""
    write(begin_checkpoint(run_dir, step))
    return commit_checkpoint(run_dir, step, info, keep)


# ----------------------------------------------------------------------------- reading
def has_training_state(ckpt: str | Path) -> bool:
    resume = Path(ckpt) / RESUME_DIR
    return any((resume / name).exists() for name in (OPTIMIZER_FILE, SHARDED_OPTIMIZER_DIR)) or any(
        (Path(ckpt) / name).is_file() for name in LEGACY_STATE_FILES)


def load_training_state(ckpt: str | Path, read_optimizer: bool = True) -> dict[str, Any]:
    """A checkpoint's training state, read and checked without touching the live run.

    Returns {"format": "accelerate" | "legacy", "optimizer": state dict (None when sharded),
    "rng": per-process generator states in Accelerate's layout}. A missing, truncated or foreign
    file is a one-line LmprobeError naming it. `read_optimizer=False` only checks that the optimizer
    file exists (for a process that resumes from a checkpoint another has checked).
    """
    ckpt = Path(ckpt)
    legacy = next((ckpt / name for name in LEGACY_STATE_FILES if (ckpt / name).is_file()), None)
    resume = ckpt / RESUME_DIR
    if legacy is not None and not (resume / OPTIMIZER_FILE).exists():
        return _legacy_state(legacy)
    if (resume / SHARDED_OPTIMIZER_DIR).is_dir():
        optimizer = None  # FSDP: only Accelerate's load_state reassembles it, on the same world size
    elif not read_optimizer:
        if not (resume / OPTIMIZER_FILE).is_file():
            raise LmprobeError(f"{ckpt} has no {RESUME_DIR}/{OPTIMIZER_FILE}; it cannot be resumed from")
        optimizer = None
    else:
        optimizer = _load(resume / OPTIMIZER_FILE, ckpt)
    ranks = sorted(int(p.stem.rsplit("_", 1)[1]) for p in resume.glob(RNG_FILE.format(rank="*"))
                   if p.stem.rsplit("_", 1)[1].isdigit())
    missing = min(set(range(max(ranks, default=-1) + 2)) - set(ranks))
    if missing < len(ranks) or not ranks:
        raise LmprobeError(f"{resume} lacks {RNG_FILE.format(rank=missing)}; it cannot be resumed from")
    rng = [_load(resume / RNG_FILE.format(rank=r), ckpt) for r in ranks]
    if not all(isinstance(s, dict) and "torch_manual_seed" in s for s in rng):
        raise LmprobeError(f"{resume} holds random states that are not Accelerate's; it cannot be resumed from")
    return {"format": "accelerate", "optimizer": optimizer, "rng": rng}


def restore_rng(states: dict[str, Any]) -> None:
    """Set every generator training draws from (python, numpy, torch CPU, CUDA) from Accelerate's layout."""
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    cuda = states.get("torch_cuda_manual_seed")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


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


def _load(path: Path, ckpt: Path) -> Any:
    """torch.load with weights_only=True (and Accelerate's numpy allowances), or a one-line error."""
    from accelerate.utils import load

    if not path.is_file():
        raise LmprobeError(f"{ckpt} has no {path.relative_to(ckpt)}; it cannot be resumed from")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            return load(path, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, a forbidden pickle
        if "Weights only load failed" in str(exc):
            reason = "not a torch file that a weights-only load accepts"
        else:
            reason = first_line(exc)
        raise LmprobeError(f"{path} is damaged ({reason}); it cannot be resumed from (use an earlier "
                           f"checkpoint: a resume falls back to one by itself)") from None


def _legacy_state(path: Path) -> dict[str, Any]:
    """A training_state.pt of lmprobe before save_state, in the layout load_training_state returns."""
    state = _load(path, path.parent)
    if not isinstance(state, dict) or "optimizer" not in state:
        raise LmprobeError(f"{path} is not an lmprobe training state; it cannot be resumed from")
    return {"format": "legacy", "optimizer": state["optimizer"],
            "rng": [_legacy_rng(s) for s in state.get("rng") or [torch.get_rng_state()]]}


def _legacy_rng(saved: Any) -> dict[str, Any]:
    if isinstance(saved, torch.Tensor):  # the earliest checkpoints kept only the CPU generator
        return {"random_state": random.getstate(), "numpy_random_seed": np.random.get_state(),
                "torch_manual_seed": saved}
    numpy = saved["numpy"]
    return {"random_state": saved["python"], "torch_manual_seed": saved["torch"],
            "numpy_random_seed": ("MT19937", numpy["key"].numpy().astype(np.uint32), numpy["pos"],
                                  numpy["has_gauss"], numpy["gauss"]),
            **({"torch_cuda_manual_seed": saved["cuda"]} if saved.get("cuda") is not None else {})}


def _remove_checkpoint(path: Path) -> None:
    """Unlist first (one rename), then delete: a kill in between leaves only a hidden folder."""
    doomed = path.with_name(f".{path.name}.tmp-removing")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _remove_stale_temporaries(ckpt_dir: Path) -> None:
    for path in ckpt_dir.glob(".step-*.tmp*"):
        shutil.rmtree(path, ignore_errors=True)


def file_mode() -> int:
    """The mode a regular file gets under this process's umask (0o644 under the usual 022)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # no /proc: read it by setting it (and back at once)
    os.umask(umask)
    return 0o666 & ~umask


def _umask_modes(folder: Path) -> None:
    """Give every file of a checkpoint the mode the umask gives regular files: safetensors writes
    model.safetensors through a private temporary file (mode 0600), so on a shared file system a
    teammate could read the config and the model card but not the weights."""
    mode = file_mode()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink() and (path.stat().st_mode & 0o777) != mode:
            os.chmod(path, mode)


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
