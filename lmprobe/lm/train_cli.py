"""`accelerate launch cli/train_lm.py [--config YAML] [key=value ...]`: train a GPT-2 and
record its probe trace into a run directory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lmprobe.config import LMConfig, save_config
from lmprobe.errors import LmprobeError
from lmprobe.train.rundir import CONFIG_FILE, RunRequest, resolve_run, timestamp


def parse_args(argv: list[str] | None, default_config: Path | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train_lm.py",
        description="Pretrain a GPT-2-style model while recording per-token probe losses.",
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


def main(argv: list[str] | None = None, default_config: Path | None = None) -> int:
    args = parse_args(argv, default_config)
    from accelerate import Accelerator
    from accelerate.utils import broadcast_object_list
    from rich.console import Console

    quiet_libraries()
    console = Console(stderr=True)
    accelerator = Accelerator()
    try:
        stamp = broadcast_object_list([timestamp()])[0] if accelerator.num_processes > 1 else timestamp()
        run = resolve_run(
            LMConfig, RunRequest(args.config, args.overrides, args.name, args.resume), stamp
        )
        accelerator.wait_for_everyone()
        summary = train(run.config, run.run_dir, run.resume, accelerator, console,
                        show_progress=not args.no_progress)
    except LmprobeError as err:
        if accelerator.is_main_process:
            console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    if accelerator.is_main_process:
        print_summary(console, run.run_dir, summary)
    accelerator.end_training()
    return 0


def quiet_libraries() -> None:
    """Our progress bar and our errors only: no per-save shard bars or config chatter."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def train(cfg: LMConfig, run_dir: Path, resume: bool, accelerator, console, show_progress=True) -> dict:
    from lmprobe.lm.task import LMTask
    from lmprobe.train.loop import LoopConfig, Trainer

    with accelerator.main_process_first():
        task = LMTask(cfg.model, cfg.data, cfg.trace.n_sequences, cfg.trace.positions_per_sequence,
                      cfg.train.seed)
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / CONFIG_FILE)
        (run_dir / "data.json").write_text(json.dumps(task.describe(), indent=1))
        task.save_probe(run_dir / "probe")
    accelerator.wait_for_everyone()
    trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness), run_dir,
                      accelerator, console, show_progress=show_progress)
    if cfg.sharpness.every:
        from lmprobe.train.sharpness_hook import sharpness_hook

        trainer.sharpness_fn = sharpness_hook(task, cfg.sharpness, cfg.optim, trainer)
    summary = trainer.fit(resume=resume)
    summary["unigram_entropy_nats"] = task.describe().get("unigram_entropy_nats")
    return summary


def print_summary(console, run_dir: Path, summary: dict) -> None:
    from rich.table import Table

    table = Table(title=f"run {run_dir}", show_header=False)
    for key in ("step", "loss", "val_loss", "val_ppl", "unigram_entropy_nats", "tokens_per_s"):
        value = summary.get(key)
        if value is not None:
            table.add_row(key, f"{value:,.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    console.print(f"next: [bold]lmprobe mine --checkpoint {run_dir}[/]")


if __name__ == "__main__":
    sys.exit(main())
