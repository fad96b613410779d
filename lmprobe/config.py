"""Run configuration: nested dataclasses <-> YAML, with command-line overrides.

Every key a run can take is a dataclass field, so a typo is caught before any work starts and
the error names the keys that would have been valid. The resolved config is written to the run
directory so a run can be reproduced from it alone.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from lmprobe.errors import LmprobeError


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    name: "adamw", "sgd" (heavy-ball momentum), "gd" (full-batch gradient descent on a fixed
    subset of `gd_batches` batches, accumulated, as in the edge-of-stability experiments) or
    "sign" (sign descent: each coordinate moves by lr in the direction of minus its gradient's sign;
    with momentum, of the momentum's sign: signum).
    full_batch: step on the fixed GD subset instead of mini-batches; null means only for "gd"
    (so a full-batch Adam or sign descent is `full_batch: true`).
    """

    name: str = field(default="adamw", metadata={"choices": ("adamw", "sgd", "gd", "sign")})
    lr: float = 3e-3
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    momentum: float = 0.0
    grad_clip: float | None = 1.0
    schedule: str = field(default="cosine", metadata={"choices": ("cosine", "constant")})  # warmup, then cosine
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    decay_embeddings: bool = False  # with weight_decay: also decay embeddings (biases and norms never are)
    gd_batches: int | None = None  # GD micro-batches; None: the whole training set (n_train / batch_size)
    full_batch: bool | None = None  # None: true for "gd" only


def is_full_batch(optim: OptimConfig) -> bool:
    """Whether every step sees the same fixed GD subset (gd, or any optimizer with full_batch: true)."""
    return optim.name == "gd" if optim.full_batch is None else bool(optim.full_batch)


@dataclass
class TrainConfig:
    """Loop lengths and cadences, in optimiser steps."""

    steps: int = 1000
    batch_size: int = 32  # global batch (sequences or images), split across processes
    grad_accum: int = 1
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 8
    checkpoint_every: int = 200
    keep_checkpoints: int | None = None  # None keeps all (mining reads their neighbours)
    seed: int = 0
    # how the training step runs (the trace, evaluation and sharpness always run in fp32, uncompiled):
    # autocast precision, unless the launch set one (`accelerate launch --mixed_precision bf16` wins)
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16", "fp16")})
    compile: bool = False  # torch.compile the training forward (the first steps pay for compilation)
    peak_flops: float | None = None  # per-device peak FLOP/s for MFU; None: a table of known GPUs (none on CPU)
    report_to: str | None = None  # also log metrics to trackers through Accelerate: tensorboard, trackio, wandb (comma-separated)
    # torch CPU threads per process; None: an explicit launcher count (--num_cpu_threads_per_process,
    # OMP_NUM_THREADS) or, on a CPU, the physical cores divided among the local processes (lmprobe/threads.py)
    threads: int | None = None


@dataclass
class TraceConfig:
    """The fixed probe set whose per-example losses are recorded during training.

    Domains extend it with how the probe is chosen (text: sequences and positions; vision: images).
    """

    every: int = 10  # record every k steps (0 disables the trace)
    batch_size: int = 64
    dtype: str = field(default="float32", metadata={"choices": ("float32", "float16")})


@dataclass
class SharpnessConfig:
    """Top Hessian eigenvalue logged during training (0 disables)."""

    every: int = 0
    k: int = 1
    n_batches: int = 1
    batch_size: int = 8
    block: str | None = None  # parameter-name block, e.g. "wte" or "transformer.h.0"
    max_iter: int = 20
    tol: float = 1e-3  # relative error certified by the residual
    follow_above: float | None = None  # also follow every eigenvalue above this fraction of the threshold (0.75: 1.5/lr)
    alignment: bool = True  # per probe example, d loss / d(top eigenvector) into run_dir/alignment (costs about 5 trace rows per measurement)


C = TypeVar("C")



def domain_field(name: str) -> Any:
    """The `domain` key every run config carries: it accepts only its own domain's name."""
    return field(default=name, metadata={"choices": (name,)})


def from_dict(cls: type[C], data: dict[str, Any], prefix: str = "") -> C:
    """Build dataclass `cls` from a nested dict, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise LmprobeError(f"config section '{prefix.rstrip('.') or '<top>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f" in '{prefix.rstrip('.')}'" if prefix else ""
        raise LmprobeError(
            f"unknown config key '{prefix}{unknown[0]}'{where}; valid keys: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{prefix}{name}", fields[name].metadata.get("choices"))
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, key: str, choices: tuple | None = None) -> Any:
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value if value is not None else {}, key + ".")
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(a for a in options if a is not type(None))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if hint is float and isinstance(value, str):
        try:  # YAML 1.1 reads "3e-4" as a string
            value = float(value)
        except ValueError:
            pass
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise LmprobeError(
            f"config key '{key}' expects {hint.__name__}, got {value!r}; fix the YAML or the override"
        )
    if choices is not None and value not in choices:
        raise LmprobeError(f"config key '{key}' must be one of {', '.join(choices)}, got {value!r}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-3' -> (['optim', 'lr'], 0.001); the value is read as YAML."""
    if "=" not in text:
        raise LmprobeError(f"override '{text}' must look like key.sub=value, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LmprobeError(f"override '{text}': '{part}' is not a config section")
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A config file as a dict, or a one-line error (missing, not YAML, not a mapping)."""
    path = Path(path)
    if path.is_dir():
        raise LmprobeError(f"config {path} is a folder; give a YAML file (see configs/ for examples)")
    if not path.is_file():
        raise LmprobeError(f"config file {path} does not exist; see configs/ for examples")
    try:
        data = yaml.safe_load(path.read_text())
    except UnicodeDecodeError:
        raise LmprobeError(f"config file {path} is not text (not UTF-8); give a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LmprobeError(f"config file {path} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise LmprobeError(f"config file {path} must hold a mapping of sections (model:, optim:, ...), "
                           f"not a {type(data).__name__}")
    return data


def load_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None
) -> C:
    """Defaults <- YAML file <- `key=value` overrides, validated into `cls`."""
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(config), sort_keys=False))
