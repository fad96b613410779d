"""Throughput and MFU of the paper-scale training step (GPT-2 124M), on whatever device runs it.

Builds configs/lm/gpt2-124m-owt.yaml's model and training step exactly as `cli/train_lm.py`
would (lmprobe's Trainer: Accelerate, its precision, torch.compile, AdamW, clipping), feeds it
blocks from the memory-mapped token store, and times optimiser steps after a warm-up (which
absorbs compilation). Reports tokens/s, MFU (nanoGPT's 6N + 12 L H Q T FLOPs per token against
the device's bf16 peak: a table of known GPUs, or --peak-flops) and peak memory.

    python benchmarks/paper_scale.py --steps 20                        # a GPU, the config's settings
    python benchmarks/paper_scale.py --steps 3 --batch-size 1 --block-size 64 --no-compile   # a CPU

The data defaults to the bundled sample (offline), tokenised with GPT-2's BPE into the store
on the first run; --source openwebtext (with network) or a local path work too.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "lm" / "gpt2-124m-owt.yaml"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation)")
    parser.add_argument("--batch-size", type=int, help="sequences per micro-batch (default: the config's)")
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per step (config: 16)")
    parser.add_argument("--block-size", type=int, help="tokens per sequence (default: the config's 1024)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), help="default: the config's (bf16)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile the step (default: the config's, on)")
    parser.add_argument("--attn", choices=("sdpa", "eager", "flash_attention_2"), help="attention kernel")
    parser.add_argument("--source", default="sample", help="data source (default: the bundled sample)")
    parser.add_argument("--max-tokens", type=int, help="cap on source tokens stored")
    parser.add_argument("--peak-flops", type=float, help="per-device peak FLOP/s for MFU")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    return parser.parse_args()


def overrides(args: argparse.Namespace) -> list[str]:
    out = [f"data.source={args.source}", f"train.grad_accum={args.grad_accum}", "data.storage=mmap",
           "trace.every=0", "sharpness.every=0"]
    for key, value in (("train.batch_size", args.batch_size), ("data.block_size", args.block_size),
                       ("train.precision", args.precision), ("model.attn_implementation", args.attn),
                       ("data.max_tokens", args.max_tokens), ("train.peak_flops", args.peak_flops)):
        if value is not None:
            out.append(f"{key}={value}")
    if args.compile is not None:
        out.append(f"train.compile={str(args.compile).lower()}")
    return out


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from lmprobe.config import load_config
    from lmprobe.lm.config import LMConfig
    from lmprobe.lm.task import LMTask
    from lmprobe.train.launch import make_accelerator
    from lmprobe.train.loop import LoopConfig, Trainer
    from lmprobe.train.throughput import device_name, mfu, peak_memory_mb

    cfg = load_config(LMConfig, args.config, overrides(args))
    accelerator = make_accelerator(cfg)
    started = time.perf_counter()
    task = LMTask(cfg)
    data_seconds = time.perf_counter() - started
    trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness),
                      Path(tempfile.mkdtemp(prefix="lmprobe-paper-")), accelerator, show_progress=False)
    trainer._build(resume=False)

    def step(s: int) -> float:
        loss = trainer._train_step(s)  # float(): waits for the device
        trainer._clip_and_step(measure=False)
        if accelerator.device.type == "cuda":
            torch.cuda.synchronize()
        return loss

    started = time.perf_counter()
    for s in range(args.warmup):
        step(s)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    losses = [step(args.warmup + s) for s in range(args.steps)]
    seconds = time.perf_counter() - started

    tokens_per_step = cfg.train.batch_size * trainer.n_micro * cfg.data.block_size
    tokens_per_s = args.steps * tokens_per_step / seconds
    utilisation = mfu(tokens_per_s / cfg.data.block_size, trainer.flops_per_example, trainer.peak_flops,
                      accelerator.num_processes)
    n_params = sum(p.numel() for p in accelerator.unwrap_model(trainer.model).parameters())
    figures = {
        "device": device_name(accelerator.device), "processes": accelerator.num_processes,
        "params": n_params, "precision": cfg.train.precision, "mixed_precision": str(accelerator.mixed_precision),
        "compile": cfg.train.compile, "attn_implementation": cfg.model.attn_implementation,
        "batch_size": cfg.train.batch_size, "grad_accum": trainer.n_micro, "block_size": cfg.data.block_size,
        "threads": torch.get_num_threads(), "steps": args.steps, "seconds": seconds,
        "warmup_seconds": warmup_seconds, "data_seconds": data_seconds, "tokens_per_s": tokens_per_s,
        "flops_per_token": trainer.flops_per_example / cfg.data.block_size if trainer.flops_per_example else None,
        "peak_flops": trainer.peak_flops, "mfu": utilisation, "peak_memory_mb": peak_memory_mb(accelerator.device),
        "last_loss": losses[-1] if losses else None,
    }
    if not accelerator.is_main_process:
        return
    table = Table(title=f"paper-scale step: {n_params / 1e6:.1f}M params on {figures['device']}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in figures.items():
        shown = "-" if value is None else f"{value:,.4g}" if isinstance(value, float) else str(value)
        table.add_row(key, shown)
    Console().print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
