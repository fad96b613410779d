"""`accelerate launch cli/train_<domain>.py [--config YAML] [key=value ...]`, for any domain.

Resolves the run directory and config, builds the domain's Task, writes what analysis needs
(config.yaml with its domain, data.json, probe/, probe/train_sample.npz), and runs the one loop.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lmprobe.config import save_config
from lmprobe.domain import Domain, get_domain
from lmprobe.errors import LmprobeError
from lmprobe.train.rundir import CONFIG_FILE, RunRequest, resolve_run, timestamp


def parse_args(argv: list[str] | None, domain: Domain, default_config: Path | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=Path(domain.train_script).name or "train",
        description=f"Train a {domain.name} model while recording per-example probe losses.",
        epilog="Overrides: any config key as key.sub=value, e.g. optim.lr=1e-3 train.steps=200",
    )
    parser.add_argument("--config", type=Path, default=default_config, help="YAML run config")
    parser.add_argument("--name", help="run name under out_dir (default: <config>-<timestamp>)")
    parser.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                        help="continue a run from its latest checkpoint (--name's, or RUN_DIR, "
                             "or the latest run of this config)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None, *, domain: str, default_config: Path | None = None) -> int:
    chosen = get_domain(domain)
    args = parse_args(argv, chosen, default_config)
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from rich.console import Console

    from lmprobe.cli import quiet_libraries

    quiet_libraries()
    console = Console(stderr=True)
    accelerator = Accelerator()
    try:
        stamp = broadcast_object_list([timestamp()])[0] if accelerator.num_processes > 1 else timestamp()
        run = resolve_run(chosen.config_class, RunRequest(args.config, args.overrides, args.name, args.resume), stamp)
        accelerator.wait_for_everyone()
        summary = train(chosen, run.config, run.run_dir, run.resume, accelerator, console,
                        show_progress=not args.no_progress)
    except LmprobeError as err:
        if accelerator.is_main_process:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    if accelerator.is_main_process:
        print_summary(console, run.run_dir, summary, chosen.summary_keys)
    accelerator.end_training()
    return 0


def train(domain: Domain, cfg, run_dir: Path, resume: bool, accelerator, console, show_progress=True) -> dict:
    from lmprobe.train.loop import LoopConfig, Trainer
    from lmprobe.train.train_sample import hessian_indices, lookahead_indices, write_train_sample

    with accelerator.main_process_first():
        task = domain.make_task(cfg)
    hessian = []
    if cfg.sharpness.every:
        hessian = [task.train_batch(i) for i in
                   hessian_indices(cfg.sharpness.n_batches, cfg.sharpness.batch_size, task.n_train())]
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        (run_dir / "data.json").write_text(json.dumps(task.data_summary(), indent=1))
        task.probe.save(run_dir / "probe")
        if not hessian:  # no hook: save the batches `lmprobe sharpness` would use by default
            hessian = [task.train_batch(i) for i in hessian_indices(1, min(8, task.n_train()), task.n_train())]
        lookahead = [task.train_batch(i) for i in lookahead_indices(task.n_train(), cfg.train.seed)]
        write_train_sample(run_dir / "probe", hessian, lookahead)
    accelerator.wait_for_everyone()
    trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness), run_dir,
                      accelerator, console, show_progress=show_progress)
    if cfg.sharpness.every:
        from lmprobe.train.sharpness_hook import sharpness_hook

        trainer.sharpness_fn = sharpness_hook(task, cfg.sharpness, hessian, trainer)
    summary = trainer.fit(resume=resume)
    summary.update({k: v for k, v in task.data_summary().items() if k in domain.summary_keys})
    return summary


def print_summary(console, run_dir: Path, summary: dict, keys: tuple[str, ...]) -> None:
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    for key in keys:
        value = summary.get(key)
        if value is not None:
            table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"next: [bold]lmprobe mine --checkpoint {run_dir}[/]")
