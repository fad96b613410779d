"""The paper-scale path: the 124M config runs real steps on this CPU through the token store, and
the step's precision, compile, attention kernel and hardware metrics behave and are recorded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lmprobe.lm.train_cli import main
from lmprobe.trace import read_trace
from lmprobe.train.metrics_log import read_metrics

ROOT = Path(__file__).resolve().parent.parent
PAPER_CONFIG = ROOT / "configs" / "lm" / "gpt2-124m-owt.yaml"


def launches(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "launches.jsonl").read_text().splitlines()]


def test_paper_config_trains_the_124m_model_through_the_token_store(tiny_corpus, tmp_path):
    """A real AdamW step of GPT-2 small (batch 1 x 64 tokens) on a local corpus, memory-mapped (on
    every core: at 124M parameters the threads pay for themselves)."""
    argv = ["--config", str(PAPER_CONFIG), "--name", "paper", "--no-progress", f"out_dir={tmp_path}",
            f"data.source={tiny_corpus}", f"data.cache_dir={tmp_path / 'cache'}", "data.block_size=64",
            "data.num_proc=1", "train.batch_size=1", "train.grad_accum=1", "train.steps=1", "train.log_every=1",
            "train.eval_batches=1", "train.compile=false",  # compiling 124M on a CPU takes minutes
            "trace.n_sequences=2", "trace.batch_size=2", "trace.every=1", "sharpness.every=0",
            "optim.warmup_steps=1"]
    assert main(argv) == 0
    run = tmp_path / "paper"
    assert any((tmp_path / "cache" / "token-store").iterdir())  # the store, not the in-memory path

    config = yaml.safe_load((run / "config.yaml").read_text())
    assert (config["model"]["n_layer"], config["model"]["n_head"], config["model"]["n_embd"]) == (12, 12, 768)
    assert config["data"]["storage"] == "mmap" and config["train"]["precision"] == "bf16"
    from safetensors import safe_open

    with safe_open(str(run / "checkpoints" / "step-000001" / "model.safetensors"), "pt") as f:
        n_params = sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys())
    assert n_params - 64 * 768 == 123_653_376  # GPT-2 small (tied head stored once) with 64 positions

    metrics = read_metrics(run / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1]
    assert all(np.isfinite(m["loss"]) and m["tokens_per_s"] > 0 and m["peak_memory_mb"] > 100 for m in metrics)
    assert metrics[0]["loss"] == pytest.approx(np.log(50257), rel=0.1)  # an untrained 50,257-way guess
    assert "mfu" not in metrics[0]  # a CPU has no known peak
    assert read_trace(run).steps.tolist() == [0, 1]
    line = launches(run)[-1]
    assert line["mixed_precision"] == "bf16" and line["precision_from"] == "config"
    assert line["attn_implementation"] == "sdpa" and line["compile"] is False and line["peak_flops"] is None


def _tiny(tiny_config, out: Path, name: str, *overrides: str) -> Path:
    argv = ["--config", str(tiny_config), "--name", name, "--no-progress", f"out_dir={out}", "train.steps=2",
            "train.log_every=1", "train.checkpoint_every=2", "train.eval_every=2", *overrides]
    assert main(argv) == 0
    return out / name


def test_bf16_compiled_training_keeps_fp32_uncompiled_measurements(tiny_config, tmp_path, monkeypatch, one_thread):
    """The compiled module trains; trace, evaluation and sharpness see the plain fp32 model."""
    compiled = []
    real_compile = torch.compile

    def eager_compile(model, **kwargs):  # dynamo without inductor's minutes of C++ compilation
        compiled.append(model)
        return real_compile(model, backend="eager")

    monkeypatch.setattr(torch, "compile", eager_compile)
    run = _tiny(tiny_config, tmp_path, "bf16", "train.precision=bf16", "train.compile=true", "sharpness.every=2",
                "sharpness.batch_size=4", "sharpness.max_iter=10", "sharpness.block=transformer.h.0")
    assert len(compiled) == 1
    record = read_metrics(run / "metrics.jsonl")[-1]
    assert record["sharpness"] > 0 and np.isfinite(record["loss"])  # double backward still works
    line = launches(run)[-1]
    assert line["mixed_precision"] == "bf16" and line["compile"] is True and line["compile_from"] == "config"

    # the last trace row is an fp32 evaluation: a fresh fp32 replay of the checkpoint matches it
    from lmprobe.domain import open_view, view_probe_losses

    view = open_view(run)
    row = view_probe_losses(view, view.load_model(run / "checkpoints" / "step-000002"))
    np.testing.assert_allclose(read_trace(run).losses[-1], row, rtol=1e-4, atol=1e-5)


def test_measurements_see_the_model_without_autocast(one_thread):
    """Under a bf16 Accelerator the prepared forward autocasts; `measured` gives the fp32 forward
    (evaluation, sharpness) and puts the autocast back afterwards."""
    from types import SimpleNamespace

    from lmprobe.lm.config import ModelConfig
    from lmprobe.lm.task import build_gpt2
    from lmprobe.train.launch import make_accelerator
    from lmprobe.train.loop import measured

    accelerator = make_accelerator(SimpleNamespace(train=SimpleNamespace(precision="bf16")))
    torch.manual_seed(0)
    model = build_gpt2(ModelConfig(n_layer=1, n_head=2, n_embd=32), 64, 16, 0)
    x = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        reference = model(input_ids=x).logits
        prepared = accelerator.prepare(model)
        assert not torch.allclose(prepared(input_ids=x).logits, reference, atol=1e-4)  # autocast is on
        with measured(accelerator.unwrap_model(prepared)) as plain:
            torch.testing.assert_close(plain(input_ids=x).logits, reference)
        assert not torch.allclose(prepared(input_ids=x).logits, reference, atol=1e-4)  # and back on


def test_a_launch_precision_wins_and_is_recorded(tiny_config, tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    run = _tiny(tiny_config, tmp_path, "launched", "train.precision=fp32", "train.eval_every=0")
    line = launches(run)[-1]
    assert line["mixed_precision"] == "bf16" and line["precision"] == "fp32" and line["precision_from"] == "launch"


def test_mfu_is_logged_against_a_given_peak(tiny_config, tmp_path, one_thread):
    run = _tiny(tiny_config, tmp_path, "mfu", "train.peak_flops=1.0e12", "train.eval_every=0",
                "model.attn_implementation=eager")
    from lmprobe.lm.task import gpt2_flops_per_token
    from transformers import GPT2LMHeadModel

    model = GPT2LMHeadModel.from_pretrained(run / "checkpoints" / "step-000002", local_files_only=True)
    block = model.config.n_positions
    per_example = gpt2_flops_per_token(model, block) * block
    for m in read_metrics(run / "metrics.jsonl"):
        assert m["mfu"] == pytest.approx(m["tokens_per_s"] / block * per_example / 1e12)
    assert launches(run)[-1]["peak_flops"] == 1e12 and launches(run)[-1]["attn_implementation"] == "eager"


def test_gpt2_small_flops_per_token_is_nanogpts_estimate():
    from lmprobe.lm.config import ModelConfig
    from lmprobe.lm.task import build_gpt2, gpt2_flops_per_token

    with torch.device("meta"):
        model = build_gpt2(ModelConfig(n_layer=12, n_head=12, n_embd=768), 50257, 1024, 50256)
    n = 123_653_376  # nanoGPT's "number of parameters: 123.65M" (position embedding excluded)
    assert gpt2_flops_per_token(model, 1024) == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_known_gpu_peaks():
    from lmprobe.train.throughput import mfu, peak_flops, table_peak_flops

    assert table_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert table_peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert table_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert table_peak_flops("NVIDIA H200") == 989e12
    assert table_peak_flops("NVIDIA L40") == 181e12 and table_peak_flops("NVIDIA L4") == 121e12
    assert table_peak_flops("NVIDIA A10G") is None and table_peak_flops("NVIDIA GeForce RTX 4090") is None
    assert peak_flops(torch.device("cpu")) is None and peak_flops(torch.device("cpu"), 2e12) == 2e12
    assert mfu(10.0, 1e9, 1e11, 2) == pytest.approx(0.05) and mfu(10.0, None, 1e11, 1) is None


@pytest.mark.parametrize("override, message", [
    ("model.attn_implementation=flash_attention_2", "flash"),
    ("train.precision=fp16", "fp16"),
    ("train.precision=fp8", "must be one of fp32, bf16, fp16"),
    ("data.storage=disk", "must be one of memory, mmap"),
])
def test_bad_step_settings_are_one_line(override, message, tiny_config, tmp_path, capsys):
    assert main(["--config", str(tiny_config), "--name", "bad", "--no-progress", f"out_dir={tmp_path}",
                 override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and message in err
    assert not (tmp_path / "bad").exists()


def test_a_deepspeed_launch_is_refused_in_one_line(monkeypatch):
    """DeepSpeed's engine saves its own checkpoint layout, which resume does not read: refused up front."""
    from types import SimpleNamespace

    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    from lmprobe.errors import LmprobeError
    from lmprobe.train.launch import make_accelerator

    monkeypatch.setattr(Accelerator, "distributed_type", property(lambda self: DistributedType.DEEPSPEED))
    with pytest.raises(LmprobeError, match="DeepSpeed launches are not supported") as err:
        make_accelerator(SimpleNamespace(train=SimpleNamespace(precision="fp32")))
    assert "\n" not in str(err.value)
