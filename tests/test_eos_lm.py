"""configs/lm/eos.yaml: text at the edge of stability. The full run (minutes) is measured in the README;
here, that the config still describes it and that a short version of it trains and sharpens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmprobe.config import load_config
from lmprobe.lm.config import LMConfig

EOS = Path(__file__).resolve().parent.parent / "configs" / "lm" / "eos.yaml"


def test_eos_config_is_full_batch_gd_with_the_signals_events_needs():
    cfg = load_config(LMConfig, EOS)
    optim, train, sharpness = cfg.optim, cfg.train, cfg.sharpness
    # the edge-of-stability setting: full-batch GD at a constant step size, nothing clipped
    assert optim.name == "gd" and optim.schedule == "constant" and optim.warmup_steps == 0
    assert optim.grad_clip is None and optim.momentum == 0 and optim.weight_decay == 0
    # the sharpness is that of the loss GD descends: the full batch, every few steps, certified
    assert sharpness.n_batches * sharpness.batch_size == optim.gd_batches * train.batch_size
    assert sharpness.every and sharpness.every <= 10 and sharpness.tol <= 1e-3 and sharpness.block is None
    # lmprobe events needs the loss every step and the probe trace as often as possible
    assert train.log_every == 1 and cfg.trace.every == 1
    # long enough to sharpen past 2/lr (first crossing measured near step 80) and spike after
    assert train.steps >= 120 and 2 / optim.lr == pytest.approx(20.0)


def test_eos_config_short_run_trains_by_gd_and_logs_sharpness_against_two_over_lr(tmp_path):
    """The first 6 steps of the real config (bundled corpus, its tokenizer): every step logged, the
    full-batch loss falls monotonically, and the sharpness is logged against 2/lr = 20."""
    from lmprobe.lm.train_cli import main

    argv = ["--config", str(EOS), "--name", "eos", "--no-progress", f"out_dir={tmp_path}", "train.steps=6",
            "train.eval_every=6", "train.checkpoint_every=6", "trace.n_sequences=8", "sharpness.every=3",
            "sharpness.max_iter=5", "sharpness.alignment=false"]
    assert main(argv) == 0
    records = [json.loads(line) for line in (tmp_path / "eos" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(r["lr"] == pytest.approx(0.1) for r in steps)
    losses = [r["loss"] for r in steps]
    assert losses == sorted(losses, reverse=True)  # GD on one fixed batch, below the edge: monotone
    measured = [r for r in records if "sharpness" in r]
    assert [r["step"] for r in measured] == [3, 6]
    assert all(r["two_over_lr"] == pytest.approx(20.0) and r["sharpness_threshold"] == pytest.approx(20.0)
               for r in measured)
    # below the edge this early (it first crosses 2/lr near step 80), measured on the full batch
    assert all(0 < r["sharpness"] < 20.0 and r["hessian_products"] >= 1 for r in measured)
