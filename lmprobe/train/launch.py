"""`accelerate launch cli/train_<domain>.py [--config YAML] [key=value ...]`, for any domain.

Resolves the run directory and config, builds the domain's Task, writes what analysis needs
(probe/, probe/train_sample.npz, data.json, then config.yaml with its domain: each atomically, and
only when a run starts), locks the run directory, and runs the one loop. A fresh start that fails
before its first checkpoint removes the directory it made, so the corrected rerun is not blocked.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from lmprobe.domain import Domain, get_domain
from lmprobe.errors import LmprobeError, OneLineArgumentParser, first_line, one_line_warnings, os_error_message
from lmprobe.train.rundir import (
    CONFIG_FILE, RunLock, RunRequest, accept_config_change, claim_start, is_unfinished_start, resolve_run,
    save_config_atomic, timestamp, write_atomic,
)

INTERRUPTED_EXIT = 130
LAUNCHES_FILE = "launches.jsonl"


def parse_args(argv: list[str] | None, domain: Domain, default_config: Path | None) -> argparse.Namespace:
    parser = OneLineArgumentParser(
        prog=Path(domain.train_script).name or "train",
        description=f"Train a {domain.name} model while recording per-example probe losses.",
        epilog="Overrides: any config key as key.sub=value, e.g. optim.lr=1e-3 train.steps=200",
    )
    default = f" (default: {default_config})" if default_config else ""
    parser.add_argument("--config", type=Path, default=None, help=f"YAML run config{default}")
    parser.add_argument("--name", help="run name under out_dir (default: <config>-<timestamp>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue a run from its latest checkpoint (--name's, or RUN_DIR, "
                             "or the latest run of this config)")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="with --resume: accept overrides (or a --config) that differ from the run's "
                             "saved config; the change is recorded in config_changes.jsonl")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, domain: str, default_config: Path | None = None) -> int:
    one_line_warnings()
    chosen = get_domain(domain)
    args = parse_args(argv, chosen, default_config)
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list, parse_flag_from_env
    from rich.console import Console

    from lmprobe.quiet import quiet_libraries
    from lmprobe.threads import use_threads
    from lmprobe.train.loop import Interrupted

    quiet_libraries()
    console = Console(stderr=True)
    # the processes now; the Accelerator once the config (its precision) is known
    accelerator = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))
    try:
        stamp = broadcast_object_list([timestamp()])[0] if accelerator.num_processes > 1 else timestamp()
        request = RunRequest(args.config, args.overrides, args.name, args.resume,
                             allow_config_change=args.allow_config_change, default_config=default_config)
        run = resolve_run(chosen.config_class, request, stamp)
        # CPU threads before any heavy work: train.threads, an explicit launcher count, else the cores
        use_threads(run.config.train.threads, device=accelerator.device, announce=accelerator.is_main_process)
        accelerator = make_accelerator(run.config, run.run_dir)
        accelerator.wait_for_everyone()
        summary = train(chosen, run.config, run.run_dir, run.resume, accelerator, console,
                        show_progress=not args.no_progress, changed=run.changed)
    except Interrupted as err:
        if accelerator.is_main_process:
            console.print(f"[bold yellow]interrupted:[/] {err}", highlight=False, soft_wrap=True)
        return INTERRUPTED_EXIT
    except KeyboardInterrupt:
        if accelerator.is_main_process:
            console.print("[bold yellow]interrupted:[/] stopped before a checkpoint could be saved", highlight=False)
        return INTERRUPTED_EXIT
    except LmprobeError as err:
        if accelerator.is_main_process:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # a read-only run directory, a full disk (checkpoints stay atomic: nothing half-written)
        rank = "" if accelerator.is_main_process else f" (process {accelerator.process_index})"
        console.print(f"[bold red]error{rank}:[/] {os_error_message(exc)}", highlight=False, soft_wrap=True)
        return 2
    finally:
        shut_down(accelerator)
    if accelerator.is_main_process:
        print_summary(console, run.run_dir, summary, chosen.summary_keys)
    return 0


def shut_down(accelerator) -> None:
    """Finish the trackers and destroy the process group while the interpreter is still alive, after
    dropping every reference to the wrapped model (a DDP module keeps the process group alive).
    Left to interpreter exit, gloo's worker threads can abort a process (SIGABRT, "terminate called
    without an active exception"), and the launcher then reports a finished run as failed."""
    import gc

    from accelerate import Accelerator, PartialState

    if isinstance(accelerator, Accelerator):
        accelerator.free_memory()  # the prepared model and optimizer
        gc.collect()
        accelerator.end_training()  # trackers, then the process group
    PartialState().destroy_process_group()


#: train.precision -> Accelerate's mixed_precision
PRECISIONS = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def launch_precision() -> str:
    """The mixed precision the launch asked for (`accelerate launch --mixed_precision`, or its
    config file); "no" when it asked for none."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION", "no").lower() or "no"


TRACKERS = ("tensorboard", "trackio", "wandb")


def trackers_of(cfg) -> list[str]:
    """train.report_to as a list of Accelerate tracker names, each checked to be installed."""
    from accelerate.utils import imports

    names = [n.strip() for n in (getattr(cfg.train, "report_to", None) or "").split(",") if n.strip()]
    for name in names:
        if name not in TRACKERS:
            raise LmprobeError(f"train.report_to names {name!r}; use {', '.join(TRACKERS)} (comma-separated)")
        if not getattr(imports, f"is_{name}_available")():
            package = "tensorboardX (or tensorboard)" if name == "tensorboard" else name
            raise LmprobeError(f"train.report_to={name} needs {package}: pip install {package.split()[0]}")
    return names


def make_accelerator(cfg, run_dir: Path | None = None):
    """An Accelerator in the run's precision: train.precision, unless the launch set a mixed
    precision (then the launch wins; launches.jsonl records which); with train.report_to, with
    Accelerate's trackers writing under run_dir/trackers."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    launched = launch_precision()
    wanted = launched if launched != "no" else PRECISIONS[getattr(cfg.train, "precision", "fp32")]
    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision") not in (None, wanted):
        AcceleratorState._reset_state()  # an earlier run in this process (tests, notebooks) chose another
    try:
        trackers = trackers_of(cfg)
        accelerator = Accelerator(mixed_precision=wanted, log_with=trackers or None,
                                  project_dir=str(run_dir / "trackers") if trackers and run_dir else None)
    except ValueError as exc:
        raise LmprobeError(f"mixed precision {wanted!r} cannot run here ({first_line(exc, 160)}); "
                           f"set train.precision=bf16 or fp32") from None
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:  # its engine keeps its own checkpoint layout
        raise LmprobeError("DeepSpeed launches are not supported: checkpoints and resume go through Accelerate's "
                           "save_state for DDP and FSDP; launch with --multi_gpu or --use_fsdp")
    if wanted == "fp16" and accelerator.device.type == "cpu":  # Accelerate would silently train in fp32
        raise LmprobeError("mixed precision 'fp16' needs a GPU (this process runs on the CPU); "
                           "set train.precision=bf16 or fp32")
    return accelerator


def train(domain: Domain, cfg, run_dir: Path, resume: bool, accelerator, console, show_progress=True,
          changed: dict | None = None) -> dict:
    """Train `cfg` into `run_dir` (fresh, or resumed from its latest good checkpoint)."""
    from lmprobe.config import to_dict
    from lmprobe.train.checkpoint import list_checkpoints
    from lmprobe.train.loop import LoopConfig, Trainer
    from lmprobe.train.train_sample import hessian_indices

    with accelerator.main_process_first():
        task = domain.make_task(cfg)
    if resume:
        check_same_data(run_dir, task.data_summary())
    hessian = []
    if cfg.sharpness.every:
        hessian = [task.train_batch(i) for i in
                   hessian_indices(cfg.sharpness.n_batches, cfg.sharpness.batch_size, task.n_train())]
    created = not resume and accelerator.is_main_process and (not run_dir.exists() or is_unfinished_start(run_dir))
    lock = _claim(run_dir, resume, accelerator)
    try:
        if accelerator.is_main_process:
            if not resume:
                write_run_files(task, cfg, run_dir, hessian)
            record_launch(run_dir, accelerator, resume, cfg)
        accelerator.wait_for_everyone()
        if trackers_of(cfg):
            accelerator.init_trackers(run_dir.name, config=flat_config(to_dict(cfg)))
        trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness), run_dir,
                          accelerator, console, show_progress=show_progress)
        trainer.run_config = to_dict(cfg)
        if changed:  # written once the resume has loaded its state: a change it cannot take is never recorded
            trainer.on_resumed = lambda step: accept_config_change(cfg, run_dir, changed, step)
        if cfg.sharpness.every:
            from lmprobe.train.sharpness_hook import sharpness_hook

            trainer.sharpness_fn = sharpness_hook(task, cfg.sharpness, hessian, trainer)
        summary = trainer.fit(resume=resume)
    except BaseException:
        if created and not list_checkpoints(run_dir):  # removed while locked: no other start is in it yet
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing trained: do not block the fixed rerun
        raise
    finally:
        lock.release()
    summary.update({k: v for k, v in task.data_summary().items() if k in domain.summary_keys})
    return summary


def flat_config(config: dict, prefix: str = "") -> dict:
    """{"optim": {"lr": 3e-3}} -> {"optim.lr": 3e-3}, with None as "null": the scalars trackers take."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = "null" if value is None else value
    return flat


def _claim(run_dir: Path, resume: bool, accelerator) -> RunLock:
    """Create (fresh) and lock the run directory on the main process; every process learns the outcome."""
    lock = RunLock(run_dir)
    error = None
    if accelerator.is_main_process:
        try:
            try:
                run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LmprobeError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
            lock.acquire(check=None if resume else claim_start)  # still an unfinished start, once locked?
        except LmprobeError as err:
            error = str(err)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error])[0]
    if error:
        raise LmprobeError(error)
    return lock


def write_run_files(task, cfg, run_dir: Path, hessian: list) -> None:
    """probe/, data.json, then config.yaml (which marks a complete start), each atomically."""
    from lmprobe.train.train_sample import hessian_indices, lookahead_indices, write_train_sample

    probe_tmp = run_dir / ".probe.tmp"
    for stale in (probe_tmp, run_dir / "probe"):
        if stale.exists():
            shutil.rmtree(stale)
    task.probe.save(probe_tmp)
    if not hessian:  # no hook: save the batches `lmprobe sharpness` would use by default
        hessian = [task.train_batch(i) for i in hessian_indices(1, min(8, task.n_train()), task.n_train())]
    lookahead = [task.train_batch(i) for i in lookahead_indices(task.n_train(), cfg.train.seed)]
    write_train_sample(probe_tmp, hessian, lookahead)
    probe_tmp.rename(run_dir / "probe")
    write_atomic(run_dir / "data.json", json.dumps(task.data_summary(), indent=1))
    save_config_atomic(cfg, run_dir / CONFIG_FILE)


#: data.json facts that must not change under a resumed run (its probe and sampler depend on them)
DATA_IDENTITY_KEYS = ("vocab_size", "n_train_blocks", "n_val_blocks", "n_train_tokens", "probe_examples",
                      "n_train", "n_val", "n_classes")


def check_same_data(run_dir: Path, summary: dict) -> None:
    path = run_dir / "data.json"
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # nothing to compare with (a run from before data.json, or a damaged one)
    differ = [k for k in DATA_IDENTITY_KEYS if k in saved and k in summary and saved[k] != summary[k]]
    if differ:
        listed = ", ".join(f"{k} {saved[k]} -> {summary[k]}" for k in differ)
        raise LmprobeError(f"the data of {run_dir} changed since the run started ({listed}); "
                           f"resume with the data it was trained on, or start a new run")


def record_launch(run_dir: Path, accelerator, resume: bool, cfg=None) -> None:
    """One line per launch: the Accelerate settings, how the training step runs (precision and
    where it came from, compile, attention kernel, peak FLOP/s for MFU) and library versions."""
    import accelerate
    import torch

    from lmprobe.threads import launch_record
    from lmprobe.train.throughput import device_name, peak_flops

    state = accelerator.state
    dynamo = str(getattr(state, "dynamo_plugin", None) and state.dynamo_plugin.backend)
    line = {
        "time": timestamp(), "resume": resume, "num_processes": accelerator.num_processes,
        "distributed_type": str(state.distributed_type), "mixed_precision": str(accelerator.mixed_precision),
        "dynamo_backend": dynamo,
        "device": str(accelerator.device), "torch": torch.__version__, "accelerate": accelerate.__version__,
    }
    line.update(launch_record())  # {"threads", "threads_source"}: torch's CPU threads and why
    train_cfg = getattr(cfg, "train", None)
    if train_cfg is not None:
        precision = getattr(train_cfg, "precision", "fp32")
        launched = dynamo not in ("None", "NO")
        line.update({
            "precision": precision,
            "precision_from": "config" if PRECISIONS[precision] == str(accelerator.mixed_precision) else "launch",
            "compile": bool(getattr(train_cfg, "compile", False)) or launched,
            "compile_from": "launch" if launched else ("config" if getattr(train_cfg, "compile", False) else None),
            "attn_implementation": getattr(getattr(cfg, "model", None), "attn_implementation", None),
            "device_name": device_name(accelerator.device),
            "peak_flops": peak_flops(accelerator.device, getattr(train_cfg, "peak_flops", None)),
        })
    with open(run_dir / LAUNCHES_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def print_summary(console, run_dir: Path, summary: dict, keys: tuple[str, ...]) -> None:
    """The final table is the command's result: stdout (progress and logs stay on stderr)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    for key in keys:
        value = summary.get(key)
        if value is not None:
            table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else str(value))
    Console().print(table)
    console.print(f"next: [bold]lmprobe mine {run_dir}[/]")
