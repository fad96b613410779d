"""Analysis hardening: damaged checkpoints and traces, impossible solver settings and output paths
end in one line (`error: ...`, exit code 2) that says what to do, never in a traceback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lmprobe.cli import main
from lmprobe.errors import LmprobeError
from lmprobe.trace import TraceWriter, read_trace_dir
from tests.conftest import TINY_STEPS

LAST = f"step-{TINY_STEPS:06d}"


def _fails(argv: list[str], capsys) -> str:
    """The command fails with exit code 2 and one `error:` line on stderr (argparse's own exit included)."""
    try:
        code = main(argv)
    except SystemExit as done:  # an argparse type check
        code = done.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    last = err.splitlines()[-1] if err else ""
    assert "Traceback" not in err
    assert last.startswith("error:"), err
    assert "\n" not in err or all(line.startswith("replaying") for line in err.splitlines()[:-1]), err
    return last


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def _truncate(path: Path, keep: int = 50) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# ----------------------------------------------------------------------------- 1. damaged model file
@pytest.fixture(scope="module")
def damaged_run(tiny_run, tmp_path_factory) -> Path:
    """The tiny run without its trace (so mining replays checkpoints) and a truncated last model."""
    run = _copy(tiny_run, tmp_path_factory.mktemp("damaged"), "damaged")
    shutil.rmtree(run / "trace")
    _truncate(run / "checkpoints" / LAST / "model.safetensors")
    return run


@pytest.mark.parametrize("command", [
    ["sharpness", "{run}"],
    ["mine", "{run}/checkpoints/" + LAST],
    ["mine", "{run}"],
])
def test_a_damaged_model_file_names_the_checkpoint_and_what_to_use(command, damaged_run, capsys, one_thread):
    err = _fails([part.format(run=damaged_run) for part in command], capsys)
    assert f"checkpoint {damaged_run / 'checkpoints' / LAST} has a damaged model" in err
    assert f"{LAST}.damaged" in err and str(damaged_run / "checkpoints" / "step-000012") in err


def test_a_damaged_vision_model_file_is_one_line(tiny_vision_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_vision_run, tmp_path)
    (run / "checkpoints" / "step-000008" / "model.safetensors").write_bytes(b"\x00" * 7)
    err = _fails(["sharpness", str(run)], capsys)
    assert "step-000008 has a damaged model" in err and "step-000004" in err


def test_a_lone_damaged_checkpoint_is_told_to_be_restored(tmp_path):
    from lmprobe.analysis.view_base import load_checkpoint_model

    def load(folder):
        raise RuntimeError("Error while deserializing header: invalid header length\nsecond line")

    wanted = r"could not load a model from .*\(Error while deserializing header.*restore"
    with pytest.raises(LmprobeError, match=wanted) as info:
        load_checkpoint_model(tmp_path, load)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("damage, message", [
    ("weights", "could not load a model from"),
    ("config", "no tokenizer could be loaded"),
])
def test_a_damaged_lone_checkpoint_is_one_line(damage, message, tiny_run, tiny_corpus, tmp_path, capsys,
                                               one_thread):
    lone = tmp_path / "lone"
    shutil.copytree(tiny_run / "checkpoints" / LAST, lone, ignore=shutil.ignore_patterns("resume", "lmprobe.json"))
    if damage == "weights":
        _truncate(lone / "model.safetensors")
    else:
        config = json.loads((lone / "config.json").read_text())
        (lone / "config.json").write_text(json.dumps({**config, "n_positions": "abc"}))
    err = _fails(["sharpness", str(lone), "--data", str(tiny_corpus)], capsys)
    assert message in err and str(lone) in err


# ----------------------------------------------------------------------------- 2. incomplete checkpoint
def test_mining_an_incomplete_checkpoint_names_the_complete_ones(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    (run / "checkpoints" / "step-000012" / "lmprobe.json").unlink()
    err = _fails(["mine", str(run / "checkpoints" / "step-000012")], capsys)
    assert "step-000012 is an incomplete checkpoint" in err and "lmprobe.json" in err
    assert "step-000004, step-000008, step-000016" in err


# ----------------------------------------------------------------------------- 3. output paths
def test_a_csv_path_that_is_a_folder_is_refused_before_any_work(tiny_run, tmp_path, capsys):
    err = _fails(["mine", str(tiny_run), "--csv", str(tmp_path)], capsys)
    assert f"--csv {tmp_path} is a folder" in err and "pairs.csv" in err
    (tmp_path / "file").write_text("x")
    err = _fails(["mine", str(tiny_run), "--csv", str(tmp_path / "file" / "pairs.csv")], capsys)
    assert f"lies inside {tmp_path / 'file'}, which is a file" in err


@pytest.mark.parametrize("command", ["plot", "examples"])
def test_an_out_folder_inside_a_file_is_refused(command, tiny_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _fails([command, str(tiny_run), "--out", str(tmp_path / "file" / "figures")], capsys)
    assert "--out" in err and "which is a file" in err


def test_suite_out_that_is_a_file_is_refused_before_loading_anything(tiny_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    err = _fails(["suite", "--checkpoints", str(tiny_run / "checkpoints" / LAST), "--out", str(tmp_path / "file")],
                 capsys)
    assert "--out" in err and "is a file" in err


# ----------------------------------------------------------------------------- 4. k above the dimension
def test_k_above_the_parameters_measured_is_refused(tiny_run, capsys, one_thread):
    err = _fails(["sharpness", str(tiny_run), "--block", "transformer.ln_f", "--k", "80", "--max-iter", "100"],
                 capsys)
    assert "k=80" in err and "64 parameters" in err and "at most 64" in err


def _linear_problem():
    torch.manual_seed(0)
    model = nn.Linear(3, 2).double()  # 8 parameters
    batches = [(torch.randn(5, 3, dtype=torch.float64), torch.randint(0, 2, (5,)))]

    def loss(m, batch):
        x, y = batch
        return nn.functional.cross_entropy(m(x), y)

    return model, loss, batches


def test_the_api_refuses_k_above_the_dimension_and_impossible_settings():
    from lmprobe.hessian import SharpnessTracker, measure_sharpness

    model, loss, batches = _linear_problem()
    assert len(measure_sharpness(model, loss, batches, k=8, max_iter=20)["eigenvalues"]) <= 8
    with pytest.raises(LmprobeError, match=r"k=9 .*only 8 parameters"):
        measure_sharpness(model, loss, batches, k=9, max_iter=20)
    with pytest.raises(LmprobeError, match=r"k=9 .*only 8 parameters"):
        SharpnessTracker(k=9, max_k=32).measure(model, loss, batches)
    for tol in (0.0, -1.0, float("nan")):
        with pytest.raises(LmprobeError, match="tol must be a positive"):
            measure_sharpness(model, loss, batches, tol=tol)
        with pytest.raises(LmprobeError, match="tol must be a positive"):
            SharpnessTracker(tol=tol)
    for lr in (0.0, -0.1, float("inf")):
        with pytest.raises(LmprobeError, match="learning rate is"):
            measure_sharpness(model, loss, batches, lr=lr)


def test_an_adam_optimizer_at_lr_zero_is_one_line_not_a_zero_division():
    from lmprobe.hessian import measure_sharpness

    model, loss, batches = _linear_problem()
    adam = torch.optim.Adam(model.parameters(), lr=0.1)
    loss(model, batches[0]).backward()
    adam.step()
    with pytest.raises(LmprobeError, match="learning rate is 0"):
        measure_sharpness(model, loss, batches, optimizer=adam, lr=0.0)


# ----------------------------------------------------------------------------- 5. lr and tol
@pytest.mark.parametrize("option, value", [("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "nan"),
                                           ("--tol", "0"), ("--tol", "-1")])
def test_sharpness_refuses_non_positive_lr_and_tol(option, value, tiny_run, capsys):
    err = _fails(["sharpness", str(tiny_run), f"{option}={value}"], capsys)
    assert option in err and "positive" in err


@pytest.mark.parametrize("value", ["0", "-1", "nan"])
def test_events_refuses_a_spike_threshold_that_is_not_positive(value, tiny_run, capsys):
    err = _fails(["events", str(tiny_run), f"--z={value}"], capsys)
    assert "--z" in err and "positive" in err


def test_a_checkpoint_saved_at_lr_zero_asks_for_lr(tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    info = run / "checkpoints" / LAST / "lmprobe.json"
    info.write_text(json.dumps({**json.loads(info.read_text()), "lr": 0.0}))
    err = _fails(["sharpness", str(run)], capsys)
    assert "learning rate 0.0" in err and "--lr" in err


def test_a_damaged_checkpoint_info_is_one_line(tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    (run / "checkpoints" / LAST / "lmprobe.json").write_text('{"lr": ')
    err = _fails(["sharpness", str(run)], capsys)
    assert "lmprobe.json is damaged" in err


# ----------------------------------------------------------------------------- 6. trace/meta.json values
@pytest.mark.parametrize("meta, message", [
    ({"n_examples": 0, "dtype": "float32"}, "n_examples is 0"),
    ({"n_examples": -5, "dtype": "float32"}, "n_examples is -5"),
    ({"n_examples": 12.5, "dtype": "float32"}, "n_examples is 12.5"),
    ({"n_examples": True, "dtype": "float32"}, "n_examples is True"),
    ({"n_examples": 186, "dtype": "object"}, "dtype is 'object'"),
    ({"n_examples": 186, "dtype": "int64"}, "dtype is 'int64'"),
    ({"n_examples": 3, "dtype": "float32"}, "does not fit the trace"),  # losses.bin far too long for 3 columns
    ({"n_examples": 186, "dtype": "float16"}, "does not fit the trace"),  # twice the rows steps.bin lists
])
def test_impossible_trace_meta_values_are_one_line(meta, message, tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    n = json.loads((tiny_run / "trace" / "meta.json").read_text())["n_examples"]
    meta = {**meta, "n_examples": n} if meta["n_examples"] == 186 else meta  # 186: the probe's own size
    message = message.replace("186", str(n))
    (run / "trace" / "meta.json").write_text(json.dumps(meta))
    err = _fails(["mine", str(run)], capsys)
    assert "trace/meta.json" in err and message in err


def test_a_trace_meta_that_disagrees_with_the_probe_is_one_line(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    n = json.loads((tiny_run / "trace" / "meta.json").read_text())["n_examples"]
    (run / "trace" / "meta.json").write_text(json.dumps({"n_examples": 2 * n, "dtype": "float32"}))
    for command in (["mine", str(run)], ["events", str(run)]):
        err = _fails(command, capsys)
        assert f"n_examples {2 * n}" in err and f"probe has {n}" in err


def test_the_reader_still_takes_a_row_the_kill_left_ahead_of_its_step(tmp_path):
    writer = TraceWriter(tmp_path, n_examples=4)
    writer.append(0, np.zeros(4))
    with open(writer.losses_path, "ab") as f:  # killed between the losses row and its step
        f.write(np.ones(4, dtype=np.float32).tobytes())
    trace = read_trace_dir(tmp_path)
    assert trace.n_records == 1 and trace.incomplete


def test_the_writer_refuses_a_dtype_readers_would_refuse(tmp_path):
    with pytest.raises(LmprobeError, match="float32, float16"):
        TraceWriter(tmp_path, n_examples=4, dtype="float64")


# ----------------------------------------------------------------------------- 7. progress off a terminal
def test_replay_progress_off_a_terminal_is_one_line_per_update(tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    shutil.rmtree(run / "trace")
    assert main(["mine", str(run), "--json"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    progress = [line for line in err.splitlines() if line.startswith("replaying")]
    assert progress == [f"replaying checkpoints: {i}/4" for i in range(1, 5)]
