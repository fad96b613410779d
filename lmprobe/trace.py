"""The probe-loss trace: one row of per-example losses per recorded training step.

Layout (run_dir/trace/):
  meta.json    {"n_examples": N, "dtype": "float32" | "float16"}
  losses.bin   raw rows of N values, appended, row-major: np.memmap-able as [rows, N]
  steps.bin    int64 training step of each row

Rows are appended with a plain write + flush, losses first and the step last, so the step file
never claims a row that is not fully on disk. A reader trusts only rows that are complete in
both files, so a trace cut short by a kill stays readable.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lmprobe.errors import LmprobeError

STEP_DTYPE = np.dtype("<i8")
TRACE_DTYPES = ("float32", "float16")  # what TraceWriter writes (config trace.dtype); readers accept only these


@dataclass
class Trace:
    """A memory-mapped view of the complete rows of a trace."""

    steps: np.ndarray  # int64 [rows]
    losses: np.ndarray  # [rows, n_examples], memory-mapped
    incomplete: bool  # True when a partial row was found (and ignored)

    @property
    def n_records(self) -> int:
        return len(self.steps)

    @property
    def n_examples(self) -> int:
        return self.losses.shape[1]


class TraceWriter:
    """Appends rows to run_dir/trace; `truncate_after` rewinds it for a resumed run."""

    def __init__(self, trace_dir: str | Path, n_examples: int, dtype: str = "float32"):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
        if name not in TRACE_DTYPES:
            raise LmprobeError(f"a trace is written as one of {', '.join(TRACE_DTYPES)}, not {dtype!r}")
        self.dir = Path(trace_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.n_examples = n_examples
        meta_path = self.dir / "meta.json"
        meta = {"n_examples": n_examples, "dtype": np.dtype(dtype).name}
        if meta_path.exists():
            found = read_meta(meta_path)
            if found != meta:
                raise LmprobeError(
                    f"the trace in {self.dir} was written as {found}, but this run records {meta}; restore "
                    f"{meta_path.name} if it was edited, or start a new run (another --name) for a different probe")
        else:
            meta_path.write_text(json.dumps(meta))
        self.losses_path = self.dir / "losses.bin"
        self.steps_path = self.dir / "steps.bin"
        self.losses_path.touch()
        self.steps_path.touch()

    def append(self, step: int, losses: np.ndarray) -> None:
        row = np.asarray(losses, dtype=self.dtype).reshape(-1)
        if row.size != self.n_examples:
            raise ValueError(f"trace row has {row.size} values, expected {self.n_examples}")
        with open(self.losses_path, "ab") as f:
            f.write(row.tobytes())
        with open(self.steps_path, "ab") as f:
            f.write(np.array([step], dtype=STEP_DTYPE).tobytes())

    def sync(self) -> None:
        """Make every row so far durable. Called before a checkpoint is committed, not per row: a
        resume drops the rows after its checkpoint anyway, so only those before it must survive a
        power cut, and an fsync per row cost a toy run two thirds of its time."""
        for path in (self.losses_path, self.steps_path):
            with open(path, "rb") as f:
                os.fsync(f.fileno())

    def truncate_before(self, step: int) -> int:
        """Drop every row recorded at `step` or later (and any partial row); return rows kept."""
        steps = _read_steps(self.steps_path)
        row_bytes = self.n_examples * self.dtype.itemsize
        complete = min(len(steps), os.path.getsize(self.losses_path) // row_bytes)
        keep = int(np.searchsorted(steps[:complete], step, side="left"))
        with open(self.losses_path, "r+b") as f:
            f.truncate(keep * row_bytes)
        with open(self.steps_path, "r+b") as f:
            f.truncate(keep * STEP_DTYPE.itemsize)
        return keep


def _read_steps(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    usable = len(raw) - len(raw) % STEP_DTYPE.itemsize
    return np.frombuffer(raw[:usable], dtype=STEP_DTYPE)


def has_trace(run_dir: str | Path) -> bool:
    trace_dir = Path(run_dir) / "trace"
    steps = trace_dir / "steps.bin"
    return (trace_dir / "meta.json").is_file() and steps.is_file() and steps.stat().st_size > 0


def read_meta(meta_path: Path) -> dict:
    """trace/meta.json, checked (n_examples a positive integer, dtype one TraceWriter writes), or a
    one-line error naming the file: the rows cannot be read without it."""
    restore = ("restore it, or delete the trace folder to replay the run's checkpoints instead "
               '(it must read like {"n_examples": 12192, "dtype": "float32"})')
    try:
        meta = json.loads(meta_path.read_text())
        n_examples, dtype = meta["n_examples"], meta["dtype"]
    except (OSError, ValueError, KeyError, TypeError):
        raise LmprobeError(f"{meta_path} is damaged (it must say n_examples and dtype); {restore}") from None
    if isinstance(n_examples, bool) or not isinstance(n_examples, int) or n_examples < 1:
        raise LmprobeError(f"{meta_path} is damaged: n_examples is {n_examples!r}, not a positive integer; {restore}")
    if dtype not in TRACE_DTYPES:
        raise LmprobeError(f"{meta_path} is damaged: dtype is {dtype!r}, not one of {', '.join(TRACE_DTYPES)}; "
                           f"{restore}")
    return meta


def read_trace(run_dir: str | Path) -> Trace:
    """Memory-map the complete rows of run_dir/trace."""
    if not (Path(run_dir) / "trace" / "meta.json").is_file():
        raise LmprobeError(f"{run_dir} has no trace (trace/meta.json missing)")
    return read_trace_dir(Path(run_dir) / "trace")


def read_trace_dir(trace_dir: str | Path) -> Trace:
    """Memory-map the complete rows of a trace folder (meta.json, losses.bin, steps.bin)."""
    trace_dir = Path(trace_dir)
    meta_path = trace_dir / "meta.json"
    meta = read_meta(meta_path)
    n, dtype = int(meta["n_examples"]), np.dtype(meta["dtype"]).newbyteorder("<")
    steps_path, losses_path = trace_dir / "steps.bin", trace_dir / "losses.bin"
    steps = _read_steps(steps_path)
    size = losses_path.stat().st_size if losses_path.exists() else 0
    rows_on_disk = size // (n * dtype.itemsize)
    if rows_on_disk > len(steps) + 1:  # the writer is at most one row ahead of steps.bin: the shape is wrong
        raise LmprobeError(
            f"{meta_path} does not fit the trace: {losses_path.name} holds {size:,} bytes, {rows_on_disk:,} rows of "
            f"{n:,} {dtype.name} values, but {steps_path.name} lists {len(steps):,} steps; restore meta.json "
            f"(n_examples, dtype), or delete the trace folder to replay the run's checkpoints instead"
        )
    rows = min(len(steps), rows_on_disk)
    incomplete = (
        size % (n * dtype.itemsize) != 0
        or steps_path.stat().st_size % STEP_DTYPE.itemsize != 0
        or len(steps) != rows_on_disk
    )
    if rows == 0:
        losses = np.zeros((0, n), dtype=dtype)
    else:
        losses = np.memmap(losses_path, dtype=dtype, mode="r", shape=(rows, n))
    return Trace(steps=np.array(steps[:rows]), losses=losses, incomplete=incomplete)
