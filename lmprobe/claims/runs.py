"""Runs a study needs, launched as a user would (`accelerate launch cli/train_<domain>.py`), kept:
a finished run is reused and an interrupted one continued with `--resume`, so a killed claims run
picks up where it stopped."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from lmprobe.errors import LmprobeError

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunSpec:
    """One training run of a study: a launcher, a config, key=value overrides and a seed."""

    name: str  # the run's folder under the study's output folder, unique per study and seed
    script: str  # cli/train_lm.py, cli/train_vision.py or cli/train_toy.py
    config: str  # a YAML config, relative to the repository root or absolute
    overrides: tuple[str, ...] = field(default=())
    seed: int = 0
    may_fail: bool = False  # a failed run (e.g. diverged) is a result of the study, not an error

    @property
    def key(self) -> str:
        return f"{self.name}-seed{self.seed}"

    def command(self, out_dir: Path, resume: bool) -> list[str]:
        script = self.script if Path(self.script).is_absolute() else str(ROOT / self.script)
        config = self.config if Path(self.config).is_absolute() else str(ROOT / self.config)
        flags = ["--resume", str(out_dir / self.key)] if resume else ["--name", self.key]
        return [*launcher(), "--num_processes", "1", script,
                "--config", config, *flags, "--no-progress", f"out_dir={out_dir}", f"train.seed={self.seed}",
                *self.overrides]


def launcher() -> list[str]:
    """`accelerate launch` from this interpreter's environment, as a user types it."""
    script = Path(sys.executable).parent / "accelerate"
    return [str(script), "launch"] if script.is_file() else [sys.executable, "-m", "accelerate.commands.launch"]


def target_steps(run_dir: Path) -> int | None:
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return None
    return int((yaml.safe_load(saved.read_text()) or {}).get("train", {}).get("steps", 0)) or None


def is_finished(run_dir: Path) -> bool:
    """The run's latest complete checkpoint is its last step."""
    from lmprobe.train.checkpoint import latest_checkpoint

    steps = target_steps(run_dir)
    latest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
    return steps is not None and latest is not None and latest[0] >= steps


def can_resume(run_dir: Path) -> bool:
    from lmprobe.train.checkpoint import latest_checkpoint

    return run_dir.is_dir() and latest_checkpoint(run_dir) is not None


def ensure_runs(specs: Sequence[RunSpec], out_dir: Path, progress: bool = True) -> dict[str, Path | None]:
    """Every spec's finished run directory, training (or resuming) those that are not finished;
    each launch's output goes to OUT/<key>.log. A spec that `may_fail` and failed maps to None (it
    is tried again by the next claims run)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    done: dict[str, Path | None] = {}
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  disable=not progress, transient=False) as bar:
        task = bar.add_task("claims: runs", total=len(specs))
        for spec in specs:
            run_dir = out_dir / spec.key
            if not is_finished(run_dir):
                resume = can_resume(run_dir)
                bar.update(task, description=f"claims: {'resuming' if resume else 'training'} {spec.key}")
                log = out_dir / f"{spec.key}.log"
                with open(log, "a") as handle:
                    code = subprocess.run(spec.command(out_dir, resume), stdout=handle, stderr=subprocess.STDOUT,
                                          cwd=ROOT, env=env).returncode
                if code != 0 or not is_finished(run_dir):
                    if not spec.may_fail:
                        raise LmprobeError(f"the run {spec.key} failed (exit {code}): see {log}")
                    run_dir = None
            done[spec.key] = run_dir
            bar.advance(task)
        bar.update(task, description="claims: runs")
    return done
