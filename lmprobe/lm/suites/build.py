"""Build (or resume) a suite run directory: one trace row per checkpoint of a series, in step order.

Through Accelerate, each process evaluates its share of the checkpoints: the pending ones are
taken in rounds of one per process, every row is computed whole on one process by the probe's
own code (lmprobe.train.task.probe_row), and the main process appends the round's rows in step
order. So 1 and N processes write the same trace, and a kill loses at most one round.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lmprobe.errors import LmprobeError
from lmprobe.lm.probe import TextProbe
from lmprobe.lm.suites.compat import SharedTokenizer, shared_tokenizer
from lmprobe.lm.suites.hashing import weights_sha256
from lmprobe.lm.suites.links import link_checkpoint
from lmprobe.lm.suites.probe import ProbeSettings, build_probe, max_tokens_for, probe_files, source_name
from lmprobe.lm.suites.record import (
    DUPLICATE, RECORDED, Evaluated, SuiteRecord, check_same_probe, pending_checkpoints, read_record, write_record,
)
from lmprobe.lm.suites.series import SeriesCheckpoint
from lmprobe.trace import TraceWriter, read_trace
from lmprobe.train.checkpoint import checkpoint_name
from lmprobe.train.task import probe_row

DTYPES = ("float32", "bfloat16", "float16", "auto")
_KEPT_ON_RESET = ("suite.json",)
Log = Callable[[str], None]


@dataclass
class SuiteOptions:
    data: str = "sample"
    block_size: int = 128
    n_sequences: int = 64
    positions_per_sequence: int | None = None
    val_fraction: float = 0.1
    seed: int = 0
    max_tokens: int | None = None
    batch_size: int = 16
    dtype: str = "float32"
    keep_duplicates: bool = False  # default: a checkpoint identical to an earlier one gets no row
    tokenizer: str | None = None  # when the checkpoints carry none


@dataclass
class SuiteResult:
    run_dir: Path
    series: list[SeriesCheckpoint]
    evaluated: list[Evaluated]  # every checkpoint evaluated so far, in step order
    new_steps: list[int]  # evaluated by this call
    settings: ProbeSettings
    n_examples: int
    files: list[Path] = field(default_factory=list)  # written by this call

    @property
    def duplicates(self) -> list[Evaluated]:
        return [e for e in self.evaluated if e.status == DUPLICATE]

    @property
    def rows(self) -> int:
        return sum(e.status == RECORDED for e in self.evaluated)


def build_suite(series: Sequence[SeriesCheckpoint], run_dir: str | Path, options: SuiteOptions,
                accelerator: Any = None, log: Log | None = None) -> SuiteResult:
    """Evaluate every checkpoint of `series` not yet in run_dir's trace; every process calls this."""
    from accelerate import Accelerator

    if options.dtype not in DTYPES:
        raise LmprobeError(f"--dtype {options.dtype!r} must be one of {', '.join(DTYPES)}")
    acc = accelerator or Accelerator()
    run_dir = Path(run_dir)
    say = log if (log is not None and acc.is_main_process) else (lambda _: None)
    series = list(series)
    shared = shared_tokenizer(series, options.tokenizer)
    if options.block_size > shared.positions:
        say(f"--block-size {options.block_size} is more than the models' {shared.positions} positions: "
            f"using blocks of {shared.positions}")
    settings = ProbeSettings(
        data=source_name(options.data), block_size=min(options.block_size, shared.positions),
        n_sequences=options.n_sequences, positions_per_sequence=options.positions_per_sequence,
        val_fraction=options.val_fraction, seed=options.seed,
        max_tokens=max_tokens_for(options.data, options.max_tokens), dtype=options.dtype,
        tokenizer=shared.fingerprint,
    )
    files: list[Path] = []
    _on_main(acc, lambda: files.extend(prepare_run_dir(run_dir, series, settings, shared, say)))

    record = read_record(run_dir)
    probe = TextProbe.load(run_dir / "probe", shared.tokenizer)
    pending = pending_checkpoints(run_dir, series, record)
    say(f"{run_dir}: {len(series)} checkpoints, {len(series) - len(pending)} already evaluated, "
        f"{len(pending)} to evaluate on {acc.num_processes} process(es); probe of {probe.n_examples:,} examples "
        f"({len(probe.sequences)} blocks of {settings.block_size} tokens)")
    new_steps = evaluate_pending(acc, run_dir, pending, probe, record, options, say)
    if new_steps and acc.is_main_process:
        files += [run_dir / "trace" / name for name in ("losses.bin", "steps.bin")]
        files += [run_dir / "suite.json", write_metrics(run_dir)]
        files += [p for p in (run_dir / "checkpoints" / checkpoint_name(s) for s in new_steps) if p.exists()]
    acc.wait_for_everyone()
    return SuiteResult(run_dir, series, record.evaluated, new_steps, settings, probe.n_examples,
                       sorted(set(files), key=str))


def prepare_run_dir(run_dir: Path, series: list[SeriesCheckpoint], settings: ProbeSettings,
                    shared: SharedTokenizer, say: Log) -> list[Path]:
    """Main process: a new suite's probe, config.yaml and empty trace; or a resumed one checked."""
    record = read_record(run_dir)
    written: list[Path] = []
    if record is None:
        if run_dir.exists() and any(run_dir.iterdir()):
            raise LmprobeError(f"{run_dir} exists and is not a suite (no suite.json); give a new --out")
        run_dir.mkdir(parents=True, exist_ok=True)
        record = SuiteRecord(probe=dataclasses.asdict(settings))
        written.append(write_record(run_dir, record))  # first: marks the folder as a suite in the making
    if not record.ready:  # new, or killed while setting up: (re)build everything but suite.json
        for item in run_dir.iterdir():
            if item.name not in _KEPT_ON_RESET:
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        say(f"drawing the probe from {settings.data} ...")
        probe = build_probe(settings, shared.tokenizer, run_dir / "probe")
        TraceWriter(run_dir / "trace", probe.n_examples)
        written += probe_files(run_dir / "probe") + [run_dir / "trace" / "meta.json", write_config(run_dir, settings)]
        record = SuiteRecord(probe=dataclasses.asdict(settings), ready=True)
    else:
        check_same_probe(run_dir, record.probe, dataclasses.asdict(settings))
        pending_checkpoints(run_dir, series, record)
        sync_trace(run_dir, record, say)
    record.series = [c.identity() for c in series]
    written.append(write_record(run_dir, record))
    return written


def sync_trace(run_dir: Path, record: SuiteRecord, say: Log) -> None:
    """Drop trace rows suite.json does not name (a kill between the two writes), or refuse a damaged trace."""
    trace = read_trace(run_dir)
    recorded = record.recorded_steps()
    on_disk = [int(s) for s in trace.steps]
    if on_disk[: len(recorded)] != recorded:
        raise LmprobeError(
            f"the trace of {run_dir} holds steps {on_disk[:8]} but suite.json names {recorded[:8]}; "
            f"the suite is damaged: remove {run_dir} and build it again"
        )
    if len(on_disk) > len(recorded) or trace.incomplete:
        writer = TraceWriter(run_dir / "trace", trace.n_examples, trace.losses.dtype.name)
        writer.truncate_before(recorded[-1] + 1 if recorded else np.iinfo(np.int64).min)
        say(f"dropped {len(on_disk) - len(recorded)} trace row(s) of an interrupted round; computing them again")


def evaluate_pending(acc: Any, run_dir: Path, pending: list[SeriesCheckpoint], probe: TextProbe,
                     record: SuiteRecord, options: SuiteOptions, say: Log) -> list[int]:
    """Rounds of one checkpoint per process; the main process appends rows and updates suite.json."""
    from accelerate.utils import gather_object

    known = record.hashes()  # kept alike on every process: each skips a known duplicate by itself
    writer = TraceWriter(run_dir / "trace", probe.n_examples) if (pending and acc.is_main_process) else None
    world, rank = acc.num_processes, acc.process_index
    for start in range(0, len(pending), world):
        chunk = pending[start : start + world]
        mine = evaluate_one(chunk[rank], probe, known, options, acc.device, world) if rank < len(chunk) else None
        results = gather_object([mine]) if world > 1 else [mine]
        failed = next((r["error"] for r in results if r is not None and r["error"]), None)
        if failed:
            raise LmprobeError(failed)
        for done, (ckpt, result) in enumerate(zip(chunk, results), start=start + 1):
            entry = _entry(ckpt, result["sha256"], known.get(result["sha256"]), options.keep_duplicates)
            known.setdefault(entry.sha256, ckpt.step)
            if writer is not None:
                _record(run_dir, record, writer, ckpt, entry, result["row"])
                what = f"row {entry.row}" if entry.row is not None else f"identical to step {entry.duplicate_of}: no row"
                say(f"[{done}/{len(pending)}] step {ckpt.step} ({ckpt.label}) sha256 {entry.sha256[:12]}: {what}")
    acc.wait_for_everyone()
    if not acc.is_main_process:  # the main process's record is the one on disk
        record.evaluated[:] = read_record(run_dir).evaluated
    return [c.step for c in pending]


def _record(run_dir: Path, record: SuiteRecord, writer: TraceWriter, ckpt: SeriesCheckpoint, entry: Evaluated,
            row: np.ndarray | None) -> None:
    """Main process: the row first, then suite.json naming it, then the checkpoint's links."""
    if entry.status == RECORDED:
        entry.row = len(record.recorded_steps())
        writer.append(ckpt.step, row)
    record.evaluated.append(entry)
    write_record(run_dir, record)
    if entry.status == RECORDED:
        link_checkpoint(run_dir, ckpt, entry.sha256)


def evaluate_one(ckpt: SeriesCheckpoint, probe: TextProbe, known: dict[str, int], options: SuiteOptions,
                 device: torch.device, world: int = 1) -> dict[str, Any]:
    """Load, hash and (unless it repeats a known checkpoint) evaluate one checkpoint on this process."""
    try:
        model = load_model(ckpt, options.dtype, probe)
        sha = weights_sha256(model)
        row = None
        if options.keep_duplicates or sha not in known:
            row = probe_row(probe, model.to(device), options.batch_size, device)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return {"sha256": sha, "row": row, "error": None}
    except LmprobeError as err:
        return {"sha256": "", "row": None, "error": str(err)}
    except Exception as exc:  # noqa: BLE001 - with several processes, the others must hear of it
        if world == 1:
            raise
        return {"sha256": "", "row": None, "error": f"evaluating {ckpt.describe()} failed: {exc!r}"}


def load_model(ckpt: SeriesCheckpoint, dtype: str, probe: TextProbe) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    from lmprobe.lm.runview import check_vocab

    torch.manual_seed(0)  # weights a checkpoint lacks are initialised alike every time (so hash alike)
    chosen = dtype if dtype == "auto" else getattr(torch, dtype)
    model = ckpt.from_pretrained(AutoModelForCausalLM, "model", dtype=chosen)
    check_vocab(model, probe, ckpt.describe())
    return model.eval()


def write_config(run_dir: Path, settings: ProbeSettings) -> Path:
    """config.yaml: a valid LM config (domain, data, probe); the series itself is in suite.json."""
    import yaml

    from lmprobe.config import to_dict
    from lmprobe.lm.config import DataConfig, LMConfig, LMTraceConfig

    config = LMConfig(
        name=run_dir.name, out_dir=str(run_dir.parent),
        data=DataConfig(source=settings.data, tokenizer=str((run_dir / "probe" / "tokenizer").resolve()),
                        block_size=settings.block_size, val_fraction=settings.val_fraction,
                        max_tokens=settings.max_tokens),
        trace=LMTraceConfig(every=0, n_sequences=settings.n_sequences,
                            positions_per_sequence=settings.positions_per_sequence),
    )
    path = run_dir / "config.yaml"
    header = ("# written by `lmprobe suite`: the trace has one row per checkpoint of the series in suite.json;\n"
              "# model/optim/train are defaults (this run was not trained by lmprobe)\n")
    path.write_text(header + yaml.safe_dump(to_dict(config), sort_keys=False))
    return path


def write_metrics(run_dir: Path) -> Path:
    """metrics.jsonl: the mean probe loss of every recorded checkpoint (what `lmprobe plot` draws)."""
    trace = read_trace(run_dir)
    lines = [json.dumps({"step": int(s), "probe_loss": float(np.mean(row))}) for s, row in zip(trace.steps, trace.losses)]
    path = run_dir / "metrics.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def _entry(ckpt: SeriesCheckpoint, sha: str, first_step: int | None, keep_duplicates: bool) -> Evaluated:
    duplicate = first_step is not None and not keep_duplicates
    return Evaluated(ckpt.step, ckpt.source, ckpt.revision, ckpt.label, sha,
                     DUPLICATE if duplicate else RECORDED, duplicate_of=first_step)


def _on_main(acc: Any, work: Callable[[], None]) -> None:
    """Run `work` on the main process; every process raises if it failed (none waits forever)."""
    from accelerate.utils import broadcast_object_list

    failure, error = None, None
    if acc.is_main_process:
        try:
            work()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others have heard
            failure, error = exc, str(exc) if isinstance(exc, LmprobeError) else f"the main process failed: {exc!r}"
    if acc.num_processes > 1:
        error = broadcast_object_list([error])[0]
    if failure is not None:
        raise failure
    if error is not None:
        raise LmprobeError(error)
