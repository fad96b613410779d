"""Choosing, creating, locking and reopening run directories.

Every process resolves the run directory from the same inputs (the timestamp is broadcast
first), so a mistake is reported identically everywhere and no process waits on one that
failed. Only the main process creates anything.

What a run directory promises, and how it is kept:
  * config.yaml is written last, atomically (temp + rename), when a run starts: a directory
    without it is a start that never finished, and a fresh start with the same name reuses it.
    A start marks the directory it takes with a start token (.start: pid, nonce) and checks,
    once it holds the lock, that the directory is still an unfinished start: two starts with one
    --name (the second preparing its data while the first trained) leave the first run as it was.
    A folder that is no start's (no token, not empty) is never taken, nor removed on a failure.
  * a resumed run keeps its config.yaml, data.json and probe/; a config that differs from the
    saved one is refused (naming the changed keys) unless the user allows the change, which is
    then recorded in config_changes.jsonl.
  * one training process at a time: run_dir/.lock is held (flock) while a run trains.
  * temporary files (.NAME.tmp-PID) of a writer that was killed are removed by the next process
    that takes the lock.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from lmprobe.cache import remove_stale_temporaries
from lmprobe.config import apply_overrides, from_dict, load_config, read_yaml, to_dict
from lmprobe.errors import LmprobeError

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
START_FILE = ".start"  # the start token: which start made the directory (pid, nonce)
CHANGES_FILE = "config_changes.jsonl"
#: keys that name where a run lives, not how it trains: never a "change"
LOCATION_KEYS = ("name", "out_dir")


@dataclass
class RunRequest:
    config_path: Path | None
    overrides: list[str]
    name: str | None
    resume: str | None  # None: fresh run; "" : resume --name (or the latest run); else a path
    allow_config_change: bool = False
    default_config: Path | None = None  # used for a fresh run given no --config


@dataclass
class ResolvedRun:
    config: Any
    run_dir: Path
    resume: bool
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # key -> (saved, now), allowed changes


def timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def validate_loop(config: Any) -> None:
    """Values the loop cannot run with, refused before any directory exists."""
    import math

    train, optim, trace, sharpness = config.train, config.optim, config.trace, config.sharpness
    checks = [
        (train.steps >= 1, f"train.steps={train.steps} must be at least 1 (the run would record nothing to mine)"),
        (train.batch_size >= 1, f"train.batch_size={train.batch_size} must be at least 1"),
        (train.grad_accum >= 1, f"train.grad_accum={train.grad_accum} must be at least 1"),
        (train.eval_batches >= 1, f"train.eval_batches={train.eval_batches} must be at least 1 "
                                  f"(set train.eval_every=0 to skip evaluation)"),
        (train.keep_checkpoints is None or train.keep_checkpoints >= 1,
         f"train.keep_checkpoints={train.keep_checkpoints} must be at least 1 (or null to keep all)"),
        (math.isfinite(optim.lr) and optim.lr >= 0, f"optim.lr={optim.lr} must be a finite number, not negative"),
        (train.seed >= 0, f"train.seed={train.seed} must not be negative (numpy seeds are non-negative)"),
        (math.isfinite(optim.weight_decay) and optim.weight_decay >= 0,
         f"optim.weight_decay={optim.weight_decay} must be a finite number, not negative"),
        (0 <= optim.beta1 < 1, f"optim.beta1={optim.beta1} must be in [0, 1)"),
        (0 <= optim.beta2 < 1, f"optim.beta2={optim.beta2} must be in [0, 1)"),
        (optim.eps > 0, f"optim.eps={optim.eps} must be positive"),
        (0 <= optim.momentum < 1, f"optim.momentum={optim.momentum} must be in [0, 1)"),
        (optim.grad_clip is None or optim.grad_clip > 0,
         f"optim.grad_clip={optim.grad_clip} must be positive (or null for no clipping)"),
        (0 <= getattr(getattr(config, "model", None), "dropout", 0.0) < 1,
         f"model.dropout={getattr(getattr(config, 'model', None), 'dropout', 0.0)} must be in [0, 1)"),
        (optim.warmup_steps >= 0, f"optim.warmup_steps={optim.warmup_steps} must not be negative"),
        (0 <= optim.min_lr_ratio <= 1, f"optim.min_lr_ratio={optim.min_lr_ratio} must be between 0 and 1"),
        (trace.batch_size >= 1, f"trace.batch_size={trace.batch_size} must be at least 1"),
    ]
    cadences = {"train.log_every": train.log_every, "train.eval_every": train.eval_every,
                "train.checkpoint_every": train.checkpoint_every, "trace.every": trace.every,
                "sharpness.every": sharpness.every}
    checks += [(every >= 0, f"{key}={every} must not be negative (a count of steps; 0 turns it off)")
               for key, every in cadences.items()]
    if sharpness.every:
        checks += [(value >= 1, f"sharpness.{key}={value} must be at least 1 (or sharpness.every=0 to turn it off)")
                   for key, value in (("k", sharpness.k), ("n_batches", sharpness.n_batches),
                                      ("batch_size", sharpness.batch_size), ("max_iter", sharpness.max_iter))]
        checks.append((sharpness.tol > 0, f"sharpness.tol={sharpness.tol} must be positive"))
    for ok, message in checks:
        if not ok:
            raise LmprobeError(message)


def resolve_run(cls: type, request: RunRequest, stamp: str) -> ResolvedRun:
    """Decide the run directory and the config (a resumed run uses its saved config)."""
    if request.resume is None:
        config_path = request.config_path or request.default_config
        config = load_config(cls, config_path, request.overrides)
        if request.name:
            config.name = request.name
        stem = config_path.stem if config_path else "run"
        config.name = config.name or f"{stem}-{stamp}"
        validate_loop(config)
        run_dir = Path(config.out_dir) / config.name
        if run_dir.exists() and not is_unfinished_start(run_dir):
            raise LmprobeError(
                f"run directory {run_dir} already exists; pass --resume to continue it, "
                f"or choose another --name"
            )
        return ResolvedRun(config, run_dir, resume=False)

    run_dir = _find_run_to_resume(cls, request)
    saved = read_saved_config(run_dir)
    base = read_yaml(request.config_path) if request.config_path else dict(saved)
    for key in LOCATION_KEYS:
        base[key] = saved.get(key)
    wanted = apply_overrides(_deep_copy(base), request.overrides)
    config = from_dict(cls, wanted)
    before = to_dict(from_dict(cls, _deep_copy(saved)))
    changed = {k: v for k, v in config_changes(before, to_dict(config)).items() if k not in LOCATION_KEYS}
    if changed and not request.allow_config_change:
        listed = ", ".join(f"{k} ({old!r} -> {new!r})" for k, (old, new) in list(changed.items())[:6])
        raise LmprobeError(
            f"--resume would change the config of {run_dir}: {listed}; resume without changes, or pass "
            f"--allow-config-change to continue with the new values (recorded in {CHANGES_FILE})"
        )
    validate_loop(config)
    return ResolvedRun(config, run_dir, resume=True, changed=changed)


def config_changes(before: dict, after: dict, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose values differ between two nested config dicts."""
    out: dict[str, tuple[Any, Any]] = {}
    for key in list(before) + [k for k in after if k not in before]:
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.update(config_changes(a, b, f"{prefix}{key}."))
        elif a != b:
            out[f"{prefix}{key}"] = (a, b)
    return out


def read_saved_config(run_dir: Path) -> dict[str, Any]:
    try:
        saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    except (OSError, yaml.YAMLError):
        saved = None
    if not isinstance(saved, dict):
        raise LmprobeError(f"{run_dir / CONFIG_FILE} is empty or damaged; restore it (it is the run's resolved "
                           f"config) or start a new run")
    return saved


def is_unfinished_start(run_dir: Path) -> bool:
    """A directory left by a start killed before config.yaml: no config, no checkpoint, no metrics,
    and a start's token (or nothing at all but the lock: killed right after mkdir). A folder of
    anything else is not a start, whatever its name."""
    if not run_dir.is_dir() or any((run_dir / name).exists() for name in (CONFIG_FILE, "checkpoints", "metrics.jsonl")):
        return False
    return (run_dir / START_FILE).is_file() or all(p.name == LOCK_FILE for p in run_dir.iterdir())


def claim_start(run_dir: Path) -> None:
    """Called by a fresh start once it holds the run lock: the directory must still be an unfinished
    start (the one this start made, or one a killed start left); it then gets this start's token.
    Otherwise another start finished (or started) a run there while this one prepared its data, or
    the folder is not a run's: refused, and nothing in it is touched."""
    if not is_unfinished_start(run_dir):
        what = ("holds a run (another start with this --name got there first)" if (run_dir / CONFIG_FILE).exists()
                or (run_dir / "checkpoints").exists() or (run_dir / "metrics.jsonl").exists()
                else "is a folder that no start made")
        raise LmprobeError(f"run directory {run_dir} {what}; nothing in it was changed; pass --resume to "
                           f"continue that run, or choose another --name")
    token = {"pid": os.getpid(), "nonce": secrets.token_hex(8), "time": timestamp()}
    write_atomic(run_dir / START_FILE, json.dumps(token) + "\n")


def accept_config_change(config: Any, run_dir: Path, changed: dict[str, tuple[Any, Any]], step: int | None) -> None:
    """A resume with --allow-config-change that has loaded its state: only now config.yaml takes the
    new values and config_changes.jsonl records them (a change the saved state cannot take is
    refused before either is written, so the plain --resume still works)."""
    save_config_atomic(config, run_dir / CONFIG_FILE)
    record_config_change(run_dir, changed, step)


def _find_run_to_resume(cls: type, request: RunRequest) -> Path:
    if request.resume:
        run_dir = Path(request.resume)
    else:
        location = [o for o in request.overrides if o.split("=", 1)[0].strip() == "out_dir"]
        out_dir = Path(load_config(cls, request.config_path or request.default_config, location).out_dir)
        if request.name:
            run_dir = out_dir / request.name
        else:
            config_path = request.config_path or request.default_config
            stem = config_path.stem if config_path else "run"
            candidates = sorted(out_dir.glob(f"{stem}-*"), key=lambda p: p.stat().st_mtime)
            if not candidates:
                raise LmprobeError(
                    f"--resume found no run of '{stem}' under {out_dir}; name one with --resume RUN_DIR"
                )
            run_dir = candidates[-1]
    if not (run_dir / CONFIG_FILE).is_file():
        hint = (" (a start interrupted before it trained: a fresh start with the same name reuses it)"
                if is_unfinished_start(run_dir) else "")
        raise LmprobeError(
            f"cannot resume {run_dir}: it is not a run directory (no {CONFIG_FILE}){hint}; "
            f"start a new run without --resume"
        )
    return run_dir


def _deep_copy(data: dict) -> dict:
    return json.loads(json.dumps(data))


# ----------------------------------------------------------------------------- writing
def write_atomic(path: Path, text: str) -> None:
    """Write a file so that a kill leaves the old content or the new, never an empty file."""
    remove_stale_temporaries(path.parent, path.name)  # a killed writer's
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_config_atomic(config: Any, path: Path) -> None:
    write_atomic(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def record_config_change(run_dir: Path, changed: dict[str, tuple[Any, Any]], step: int | None) -> None:
    line = json.dumps({"time": timestamp(), "from_step": step,
                       "changed": {k: {"was": a, "now": b} for k, (a, b) in changed.items()}})
    with open(run_dir / CHANGES_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")


class RunLock:
    """An exclusive flock on run_dir/.lock, held while a run trains (released on exit, even on a kill)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_FILE
        self._file = None

    def acquire(self, check: Callable[[Path], None] | None = None) -> "RunLock":
        """Take the lock, then run `check(run_dir)` (which may refuse) before anything is written:
        the lock file gets this process's pid only when the run is really taken."""
        import fcntl

        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise LmprobeError(
                f"run {self.path.parent} is in use by another training process (pid {holder}); "
                f"wait for it to finish, or choose another --name"
            ) from None
        try:
            if not _same_file(handle, self.path):  # removed (a failed start's cleanup) while we opened it
                raise LmprobeError(f"run directory {self.path.parent} was removed while this process took it; "
                                   f"run the command again")
            if check is not None:
                check(self.path.parent)
        except BaseException:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            handle.close()
            raise
        remove_stale_temporaries(self.path.parent)  # only the lock holder writes there: a dead writer's
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None


def _same_file(handle, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except OSError:
        return False
