"""Choosing, creating and reopening run directories.

Every process resolves the run directory from the same inputs (the timestamp is broadcast
first), so a mistake is reported identically everywhere and no process waits on one that
failed. Only the main process creates anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmprobe.config import apply_overrides, from_dict, load_config
from lmprobe.errors import LmprobeError

import yaml

CONFIG_FILE = "config.yaml"


@dataclass
class RunRequest:
    config_path: Path | None
    overrides: list[str]
    name: str | None
    resume: str | None  # None: fresh run; "" : resume --name (or the latest run); else a path


@dataclass
class ResolvedRun:
    config: Any
    run_dir: Path
    resume: bool


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def resolve_run(cls: type, request: RunRequest, stamp: str) -> ResolvedRun:
    """Decide the run directory and the config (a resumed run uses its saved config)."""
    if request.resume is None:
        config = load_config(cls, request.config_path, request.overrides)
        if request.name:
            config.name = request.name
        stem = request.config_path.stem if request.config_path else "run"
        config.name = config.name or f"{stem}-{stamp}"
        run_dir = Path(config.out_dir) / config.name
        if run_dir.exists():
            raise LmprobeError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                f"or choose another --name"
            )
        return ResolvedRun(config, run_dir, resume=False)

    run_dir = _find_run_to_resume(cls, request)
    saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
    config = from_dict(cls, apply_overrides(saved, request.overrides))
    return ResolvedRun(config, run_dir, resume=True)


def _find_run_to_resume(cls: type, request: RunRequest) -> Path:
    if request.resume:
        run_dir = Path(request.resume)
    else:
        out_dir = Path(load_config(cls, request.config_path, []).out_dir)
        if request.name:
            run_dir = out_dir / request.name
        else:
            stem = request.config_path.stem if request.config_path else "run"
            candidates = sorted(out_dir.glob(f"{stem}-*"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                raise LmprobeError(
                    f"--resume found no run of '{stem}' under {out_dir}; name one with --resume RUN_DIR"
                )
            run_dir = candidates[-1]
    if not (run_dir / CONFIG_FILE).is_file():
        raise LmprobeError(
            f"cannot resume {run_dir}: it is not a run directory (no {CONFIG_FILE}); "
            f"start a new run without --resume"
        )
    return run_dir
