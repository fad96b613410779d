"""End to end: `cli/train_lm.py` on a tiny config writes a complete, resumable run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmprobe.lm.train_cli import main
from tests.conftest import TINY_STEPS, launch_two_processes
from lmprobe.trace import read_trace
from lmprobe.train.checkpoint import list_checkpoints
from lmprobe.train.loop import MEASURED_KEYS
from lmprobe.train.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TRAIN_LM = ROOT / "cli" / "train_lm.py"
TIMING_KEYS = set(MEASURED_KEYS)  # timings and memory: differ between identical runs


@pytest.fixture(scope="module")
def reference_run(tiny_run) -> Path:
    return tiny_run


def without_timings(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_run_directory_is_complete(reference_run):
    run = reference_run
    assert (run / "config.yaml").is_file() and (run / "data.json").is_file()
    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == list(range(2, TINY_STEPS + 1, 2))
    assert all(np.isfinite(m["loss"]) for m in metrics)
    evals = [m for m in metrics if "val_loss" in m]
    assert [m["step"] for m in evals] == [8, 16]
    assert evals[-1]["val_ppl"] == pytest.approx(np.exp(evals[-1]["val_loss"]))
    assert metrics[-1]["loss"] < metrics[0]["loss"]

    trace = read_trace(run)
    probe = np.load(run / "probe" / "probe.npz")
    assert trace.steps.tolist() == list(range(0, TINY_STEPS + 1, 2))
    assert trace.n_examples == len(probe["target"]) == 6 * 31
    assert trace.losses.mean(axis=1)[-1] < trace.losses.mean(axis=1)[0]
    assert (run / "probe" / "tokenizer" / "tokenizer.json").is_file()

    assert [s for s, _ in list_checkpoints(run)] == [4, 8, 12, 16]
    last = run / "checkpoints" / "step-000016"
    assert (last / "model.safetensors").is_file() and (last / "tokenizer.json").is_file()
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(last, local_files_only=True)
    assert model.config.vocab_size == 512


def test_probe_row_matches_a_fresh_evaluation_of_the_checkpoint(reference_run):
    from lmprobe.domain import open_view, view_probe_losses

    view = open_view(reference_run)
    row = view_probe_losses(view, view.load_model(reference_run / "checkpoints" / "step-000016"))
    np.testing.assert_allclose(read_trace(reference_run).losses[-1], row, rtol=1e-4, atol=1e-5)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, "training finished before it could be interrupted"
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_sigkill_then_resume_gives_the_same_trace_and_metrics(tiny_config, reference_run, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, str(TRAIN_LM), "--config", str(tiny_config), "--name", "killed",
           "--no-progress", f"out_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(tmp_path / "killed" / "checkpoints" / "step-000004", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = tmp_path / "killed"
    assert read_trace(killed).steps.max() < TINY_STEPS  # it really was cut short
    assert main(["--resume", str(killed), "--no-progress"]) == 0

    ref, resumed = read_trace(reference_run), read_trace(killed)
    assert resumed.steps.tolist() == ref.steps.tolist()
    np.testing.assert_array_equal(np.asarray(resumed.losses), np.asarray(ref.losses))
    assert without_timings(read_metrics(killed / "metrics.jsonl")) == without_timings(
        read_metrics(reference_run / "metrics.jsonl"))


def test_two_processes_train_the_same_model_as_one(tiny_config, reference_run, tmp_path):
    launch_two_processes(TRAIN_LM, "--config", str(tiny_config), "--name", "two", "--no-progress",
                         f"out_dir={tmp_path}")
    two, one = read_trace(tmp_path / "two"), read_trace(reference_run)
    assert two.steps.tolist() == one.steps.tolist()
    np.testing.assert_allclose(np.asarray(two.losses), np.asarray(one.losses), rtol=1e-4, atol=1e-4)
    m2, m1 = read_metrics(tmp_path / "two" / "metrics.jsonl"), read_metrics(reference_run / "metrics.jsonl")
    np.testing.assert_allclose([m["loss"] for m in m2], [m["loss"] for m in m1], rtol=1e-4)
    # only the main process wrote: one line per logged step, one set of checkpoints
    assert len(m2) == len(m1)
    assert [s for s, _ in list_checkpoints(tmp_path / "two")] == [4, 8, 12, 16]


def test_two_process_resume_with_dropout_is_bit_identical(tiny_config, tmp_path):
    """Dropout draws from each process's own generator: resuming from a middle checkpoint repeats
    the rest of the run exactly only if Accelerate's save_state kept every process's RNG state."""
    import shutil

    launch_two_processes(TRAIN_LM, "--config", str(tiny_config), "--name", "full", "--no-progress",
                         f"out_dir={tmp_path}", "model.dropout=0.1")
    full = tmp_path / "full"
    saved = sorted(p.name for p in (full / "checkpoints" / "step-000008" / "resume").iterdir())
    assert saved == ["optimizer.bin", "random_states_0.pkl", "random_states_1.pkl"]
    cut = Path(shutil.copytree(full, tmp_path / "cut"))
    for step, ckpt in list_checkpoints(cut):
        if step > 8:
            shutil.rmtree(ckpt)
    launch_two_processes(TRAIN_LM, "--resume", str(cut), "--no-progress")
    np.testing.assert_array_equal(np.asarray(read_trace(cut).losses), np.asarray(read_trace(full).losses))
    assert without_timings(read_metrics(cut / "metrics.jsonl")) == without_timings(read_metrics(full / "metrics.jsonl"))
    assert [s for s, _ in list_checkpoints(cut)] == [4, 8, 12, 16]


# ----------------------------------------------------------------------------- bad input
def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("override, message", [
    ("data.source=/no/such/corpus.txt", "/no/such/corpus.txt"),
    ("data.tokenizer=/no/such/tokenizer", "tokenizer"),
    ("optim.lrr=1e-3", "unknown config key 'optim.lrr'"),
    ("train.steps=ten", "expects int"),
])
def test_bad_input_is_one_line_and_writes_nothing(override, message, tiny_config, tmp_path, capsys):
    err = _fails(["--config", str(tiny_config), "--name", "bad", "--no-progress",
                  f"out_dir={tmp_path}", override], capsys)
    assert message in err
    assert not (tmp_path / "bad").exists()


def test_empty_data_file(tiny_config, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    err = _fails(["--config", str(tiny_config), "--name", "e", "--no-progress", f"out_dir={tmp_path}",
                  f"data.source={empty}"], capsys)
    assert "empty.txt" in err
    assert not (tmp_path / "e").exists()


def test_existing_run_needs_resume(tiny_config, reference_run, capsys):
    before = (reference_run / "metrics.jsonl").read_text()
    err = _fails(["--config", str(tiny_config), "--name", reference_run.name, "--no-progress",
                  f"out_dir={reference_run.parent}"], capsys)
    assert "already exists" in err and "--resume" in err
    assert (reference_run / "metrics.jsonl").read_text() == before


def test_resume_of_something_that_is_not_a_run(tmp_path, capsys):
    assert "not a run directory" in _fails(["--resume", str(tmp_path), "--no-progress"], capsys)


def test_divergence_stops_saves_and_names_the_step(tiny_config, tmp_path, capsys):
    err = _fails(["--config", str(tiny_config), "--name", "nan", "--no-progress", f"out_dir={tmp_path}",
                  "optim.name=sgd", "optim.lr=1e30", "optim.grad_clip=null", "optim.warmup_steps=0"], capsys)
    assert "at step 2" in err and "step-000001" in err
    run = tmp_path / "nan"
    assert [s for s, _ in list_checkpoints(run)] == [1]
    assert read_metrics(run / "metrics.jsonl")[-1]["stopped"].startswith("non-finite loss")
    assert read_trace(run).steps.tolist() == [0]
    # the advice is a command that is accepted (here the weights at step 1 are already past saving,
    # so it stops again); retries record the stop once
    assert f"--resume {run} --allow-config-change optim.lr=" in err
    _fails(["--resume", str(run), "--no-progress"], capsys)
    again = _fails(["--resume", str(run), "--no-progress", "--allow-config-change", "optim.lr=1e-3"], capsys)
    assert "at step 2" in again
    assert sum("stopped" in r for r in read_metrics(run / "metrics.jsonl")) == 1


# ----------------------------------------------------------------------------- optimisers
def _short_run(tiny_config, out: Path, name: str, *overrides: str) -> Path:
    argv = ["--config", str(tiny_config), "--name", name, "--no-progress", f"out_dir={out}",
            "train.steps=4", "train.checkpoint_every=4", "train.eval_every=4", "sharpness.max_iter=10", *overrides]
    assert main(argv) == 0
    return out / name


def test_accumulation_matches_one_big_batch(tiny_config, tmp_path):
    big = _short_run(tiny_config, tmp_path, "big", "train.batch_size=8")
    accumulated = _short_run(tiny_config, tmp_path, "acc", "train.batch_size=4", "train.grad_accum=2")
    np.testing.assert_allclose(np.asarray(read_trace(accumulated).losses), np.asarray(read_trace(big).losses),
                               rtol=1e-4, atol=1e-5)


def test_full_batch_gd_and_sgd_with_momentum_log_sharpness(tiny_config, tmp_path):
    gd = _short_run(tiny_config, tmp_path, "gd", "optim.name=gd", "optim.lr=0.5", "optim.gd_batches=2",
                    "optim.schedule=constant", "optim.warmup_steps=0", "sharpness.every=2",
                    "sharpness.batch_size=8", "sharpness.n_batches=2", "sharpness.block=transformer.h.0")
    records = [m for m in read_metrics(gd / "metrics.jsonl") if "sharpness" in m]
    assert [m["step"] for m in records] == [2, 4]
    assert all(m["sharpness"] > 0 and m["sharpness_threshold"] == pytest.approx(2 / 0.5) for m in records)
    # GD trains on the same fixed batches every step: its training loss falls monotonically here
    losses = [m["loss"] for m in read_metrics(gd / "metrics.jsonl")]
    assert losses == sorted(losses, reverse=True)

    sgd = _short_run(tiny_config, tmp_path, "sgd", "optim.name=sgd", "optim.lr=0.1", "optim.momentum=0.9",
                     "sharpness.every=4", "sharpness.batch_size=4", "sharpness.block=transformer.h.0")
    record = [m for m in read_metrics(sgd / "metrics.jsonl") if "sharpness" in m][-1]
    assert record["sharpness_threshold"] == pytest.approx((1 + 0.9) * record["two_over_lr"])  # (2+2b)/lr


def test_at_lr_zero_sharpness_is_skipped_not_a_crash(tiny_config, tmp_path):
    """lr 0 has no 2/lr to compare with (and Adam's preconditioner divides by it): the hook skips it."""
    run = _short_run(tiny_config, tmp_path, "still", "optim.lr=0", "sharpness.every=2", "sharpness.batch_size=4",
                     "sharpness.block=transformer.h.0")
    records = read_metrics(run / "metrics.jsonl")
    assert records[-1]["step"] == 4 and not any("sharpness" in r for r in records)


def test_adam_logs_preconditioned_sharpness(tiny_config, tmp_path):
    run = _short_run(tiny_config, tmp_path, "adam", "sharpness.every=4", "sharpness.batch_size=4",
                     "sharpness.block=transformer.h.0")
    record = [m for m in read_metrics(run / "metrics.jsonl") if "sharpness" in m][-1]
    assert record["preconditioned_sharpness"] > 0
    assert record["preconditioned_threshold"] == pytest.approx(19 * record["two_over_lr"])  # 38/lr
