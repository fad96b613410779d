"""`lmprobe suite`: a run directory from a series of foreign (GPT-NeoX) checkpoints, end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmprobe.cli import main
from lmprobe.lm.suites import hub_series, local_series, read_record
from lmprobe.trace import read_trace
from tests.conftest import accelerate_two_processes

REPO = Path(__file__).resolve().parents[1]
STEPS = (100, 200, 300)
SUITE_OPTIONS = ["--n-sequences", "6", "--block-size", "64"]  # the model has 32 positions: blocks become 32


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_corpus, one_thread) -> list[Path]:
    """Three GPT-NeoX checkpoints a few AdamW steps apart (save_pretrained + tokenizer), then a
    fourth folder that is a byte copy of the third: a series with one repeated checkpoint."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from lmprobe.lm.data import load_tokenizer, prepare_lm_data

    tokenizer = load_tokenizer("bpe-512", source=str(tiny_corpus))
    config = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=32,
                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(config)
    blocks = prepare_lm_data(str(tiny_corpus), tokenizer, block_size=32, val_fraction=0.1, seed=0).train
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("series")
    folders = []
    for step in STEPS:
        for _ in range(3):
            batch = torch.from_numpy(blocks[rng.integers(len(blocks), size=8)].astype(np.int64))
            model(input_ids=batch, labels=batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        folder = root / f"ckpt-{step}"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        folders.append(folder)
    folders.append(root / "ckpt-400")
    shutil.copytree(folders[2], folders[3])
    return folders


def suite(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(["suite", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def suite_args(folders, out: Path, corpus: Path) -> list[str]:
    return ["--checkpoints", *map(str, folders), "--data", str(corpus), "--out", str(out), *SUITE_OPTIONS]


@pytest.fixture(scope="module")
def built(checkpoints, tiny_corpus, tmp_path_factory):
    """The suite of all four folders, built once through the CLI with --json."""
    out = tmp_path_factory.mktemp("suites") / "neox"
    code = main(["suite", *suite_args(checkpoints, out, tiny_corpus), "--json"])
    assert code == 0
    return out


def direct_rows(run: Path, folders: list[Path]) -> np.ndarray:
    from transformers import AutoModelForCausalLM

    from lmprobe.lm.probe import TextProbe
    from lmprobe.train.task import probe_row

    from accelerate import Accelerator

    device = Accelerator().device  # the device `lmprobe suite` evaluated on
    probe = TextProbe.load(run / "probe")
    return np.stack([probe_row(probe, AutoModelForCausalLM.from_pretrained(str(f)).to(device), 16, device)
                     for f in folders])


def test_trace_rows_are_the_checkpoints_own_probe_losses(built, checkpoints, one_thread):
    trace = read_trace(built)
    assert trace.steps.tolist() == list(STEPS)  # the copy at step 400 has no row
    np.testing.assert_array_equal(np.asarray(trace.losses), direct_rows(built, checkpoints[:3]))
    assert not np.allclose(trace.losses[0], trace.losses[2])  # training moved the losses

    from lmprobe.lm.probe import TextProbe

    probe = TextProbe.load(built / "probe")
    assert probe.sequences.shape == (6, 32)  # clipped to the model's 32 positions
    assert trace.n_examples == probe.n_examples == 6 * 31
    config = (built / "config.yaml").read_text()
    assert "domain: lm" in config and "block_size: 32" in config


def test_identical_checkpoint_is_reported_and_not_mined(built, checkpoints):
    record = read_record(built)
    by_step = {e.step: e for e in record.evaluated}
    assert [e.step for e in record.evaluated] == [100, 200, 300, 400]
    assert by_step[400].status == "duplicate" and by_step[400].duplicate_of == 300 and by_step[400].row is None
    assert by_step[400].sha256 == by_step[300].sha256 != by_step[200].sha256
    assert [by_step[s].row for s in STEPS] == [0, 1, 2]
    assert record.series[3]["source"] == str(checkpoints[3].resolve())
    assert sorted(p.name for p in (built / "checkpoints").iterdir()) == ["step-000100", "step-000200", "step-000300"]


def test_mine_and_open_view_read_the_suite(built, capsys, one_thread):
    from lmprobe.domain import open_view

    view = open_view(built)
    assert view.domain == "lm" and view.checkpoint.name == "step-000300"
    assert set(view.keys()) == {"target", "feature", "feature2"}
    capsys.readouterr()
    assert main(["mine", str(built), "--json", "--min-size", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == list(STEPS) and result["n_examples"] == view.probe.n_examples
    trace = read_trace(built)
    np.testing.assert_allclose(result["global_mean_loss"], np.asarray(trace.losses).mean(axis=1), rtol=1e-5)


def test_table_names_the_duplicate_and_every_file(checkpoints, tiny_corpus, tmp_path, capsys):
    code, out, err = suite(suite_args(checkpoints[2:], tmp_path / "pair", tiny_corpus), capsys)
    assert code == 0
    assert "identical to step 300" in out and "skipped" in out
    for name in ("config.yaml", "suite.json", "probe.npz", "losses.bin", "steps.bin", "metrics.jsonl"):
        assert f"{name}" in out and "wrote" in out
    assert "1 trace row" in err  # one distinct checkpoint: mining would have nothing to compare
    assert "--block-size 64 is more than the models' 32 positions: using blocks of 32" in err


def test_rerun_resumes_without_recomputing(built, checkpoints, tiny_corpus, capsys, monkeypatch):
    import lmprobe.lm.suites.build as build

    losses = built / "trace" / "losses.bin"
    before = (losses.stat().st_mtime_ns, losses.read_bytes())

    def no_loading(*args, **kwargs):
        raise AssertionError("a recorded checkpoint was loaded again")

    monkeypatch.setattr(build, "load_model", no_loading)
    code, out, _ = suite([*suite_args(checkpoints, built, tiny_corpus), "--json"], capsys)
    assert code == 0
    summary = json.loads(out)
    assert summary["rows"] == 3 and summary["rows_written"] == 0
    assert not any(c["new"] for c in summary["checkpoints"])
    assert (losses.stat().st_mtime_ns, losses.read_bytes()) == before


def test_an_interrupted_or_extended_series_continues(built, checkpoints, tiny_corpus, tmp_path, capsys,
                                                      monkeypatch, one_thread):
    import lmprobe.lm.suites.build as build

    loaded = []
    real = build.load_model
    monkeypatch.setattr(build, "load_model", lambda ckpt, *a: loaded.append(ckpt.step) or real(ckpt, *a))
    out = tmp_path / "grown"
    assert suite(suite_args(checkpoints[:2], out, tiny_corpus), capsys)[0] == 0
    assert suite(suite_args(checkpoints, out, tiny_corpus), capsys)[0] == 0  # two more follow
    assert loaded == [100, 200, 300, 400]
    np.testing.assert_array_equal(read_trace(out).losses, read_trace(built).losses)

    # killed after the trace got step 300's row but before suite.json named it
    data = json.loads((out / "suite.json").read_text())
    data["evaluated"] = data["evaluated"][:2]
    (out / "suite.json").write_text(json.dumps(data))
    loaded.clear()
    code, _, err = suite(suite_args(checkpoints, out, tiny_corpus), capsys)
    assert code == 0 and "dropped 1 trace row" in err
    assert loaded == [300, 400]
    np.testing.assert_array_equal(read_trace(out).losses, read_trace(built).losses)


def test_changed_series_or_settings_are_refused(built, checkpoints, tiny_corpus, capsys):
    code, _, err = suite(suite_args([checkpoints[1], checkpoints[0]], built, tiny_corpus) + ["--steps", "100,200"],
                         capsys)
    assert code == 2 and "recorded step 100 from" in err and "new --out" in err
    code, _, err = suite(suite_args(checkpoints, built, tiny_corpus) + ["--seed", "1"], capsys)
    assert code == 2 and "seed=0" in err


def test_offline_hub_model_fails_in_one_line(tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, out, err = suite(["--model", "EleutherAI/pythia-70m", "--revisions", "step1000,step2000",
                            "--data", str(tiny_corpus), "--out", str(tmp_path / "pythia")], capsys)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert "EleutherAI/pythia-70m@step1000" in err and "HF_HUB_OFFLINE" in err
    assert not (tmp_path / "pythia").exists()


def test_hub_revisions_from_the_cache(built, checkpoints, tiny_corpus, tmp_path):
    """The Hub path (model id + revisions, AutoModelForCausalLM.from_pretrained(id, revision=...)),
    offline from a Hugging Face cache that holds the three checkpoints as revisions step100..step300."""
    import hashlib

    repo = tmp_path / "hub" / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    for folder, step in zip(checkpoints, STEPS):
        commit = hashlib.sha1(folder.name.encode()).hexdigest()
        (repo / "refs" / f"step{step}").write_text(commit)
        shutil.copytree(folder, repo / "snapshots" / commit)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tmp_path / "hub"), OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "from-hub"
    command = [sys.executable, "-m", "lmprobe.cli", "suite", "--model", "org/tiny", "--revisions", "step300,step100",
               "step200", "--data", str(tiny_corpus), "--out", str(out), *SUITE_OPTIONS]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert [(e.revision, e.step) for e in read_record(out).evaluated] == [(f"step{s}", s) for s in STEPS]
    assert read_trace(out).steps.tolist() == list(STEPS)
    np.testing.assert_array_equal(read_trace(out).losses, read_trace(built).losses)
    assert (out / "checkpoints" / "step-000200" / "model.safetensors").resolve().parent.parent.name == "snapshots"


def test_mismatched_tokenizers_are_refused_in_one_line(checkpoints, tiny_corpus, tmp_path, capsys):
    other = tmp_path / "ckpt-500"
    shutil.copytree(checkpoints[1], other)
    spec = json.loads((other / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    a, b = (token for token, i in vocab.items() if i in (300, 301))
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, two ids swapped
    (other / "tokenizer.json").write_text(json.dumps(spec))
    code, _, err = suite(suite_args([checkpoints[0], other], tmp_path / "mixed", tiny_corpus), capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "tokenizer of ckpt-500 differs from that of ckpt-100" in err

    bigger = tmp_path / "ckpt-600"
    shutil.copytree(checkpoints[1], bigger)
    config = json.loads((bigger / "config.json").read_text())
    config["vocab_size"] = 600
    (bigger / "config.json").write_text(json.dumps(config))
    code, _, err = suite(suite_args([checkpoints[0], bigger], tmp_path / "mixed2", tiny_corpus), capsys)
    assert code == 2 and "ckpt-600 has a vocabulary of 600 tokens but ckpt-100 has 512" in err


def test_steps_from_names_order_or_flag(checkpoints):
    assert [c.step for c in hub_series("org/m", ["step2000", "step1000"])] == [1000, 2000]
    assert [c.revision for c in hub_series("org/m", ["main", "v2"])] == ["main", "v2"]  # order: steps 0, 1
    assert [c.step for c in local_series(checkpoints[:2])] == [100, 200]
    assert [c.label for c in local_series(checkpoints[:2], [5, 1])] == ["ckpt-200", "ckpt-100"]
    from lmprobe.errors import LmprobeError

    with pytest.raises(LmprobeError, match="both have step 7"):
        local_series(checkpoints[:2], [7, 7])
    with pytest.raises(LmprobeError, match="does not exist"):
        local_series([checkpoints[0].parent / "missing"])


@pytest.mark.slow
def test_two_processes_write_the_same_trace(built, checkpoints, tiny_corpus, tmp_path):
    out = tmp_path / "two"
    accelerate_two_processes("-m", "lmprobe.cli", "suite", *suite_args(checkpoints, out, tiny_corpus))
    assert (out / "trace" / "steps.bin").read_bytes() == (built / "trace" / "steps.bin").read_bytes()
    import torch

    two, one = read_trace(out).losses, read_trace(built).losses
    if torch.cuda.is_available():  # `built` ran on the GPU, the two processes on the CPU
        np.testing.assert_allclose(two, one, rtol=1e-4, atol=1e-5)
    else:
        np.testing.assert_array_equal(two, one)
    assert [e.status for e in read_record(out).evaluated] == ["recorded"] * 3 + ["duplicate"]


def test_examples_reads_the_suite(built, tmp_path, capsys, one_thread):
    capsys.readouterr()
    assert main(["examples", str(built), "--out", str(tmp_path / "examples"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "examples" / "examples.parquet").num_rows == read_trace(built).n_examples
