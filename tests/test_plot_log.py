"""`lmprobe plot --log` and `lmprobe mine --log`: figures and the pairs table land in the run's
TensorBoard log, where TensorBoard's own reader finds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmprobe.cli import main as cli_main


def run_cli(argv, capsys):
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def tensorboard_run(tiny_vision_config, tmp_path_factory) -> Path:
    from lmprobe.train.launch import main

    out = tmp_path_factory.mktemp("tb")
    assert main(["--config", str(tiny_vision_config), "--name", "tb", "--no-progress", f"out_dir={out}",
                 "train.report_to=tensorboard"], domain="vision") == 0
    return out / "tb"


def load_events(run: Path):
    """TensorBoard's reader on the run's main log folder (the one holding the logged metrics)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for folder in sorted({p.parent for p in (run / "trackers").rglob("events.out.tfevents.*")}):
        accumulator = EventAccumulator(str(folder), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
        accumulator.Reload()
        if "loss" in accumulator.Tags()["scalars"]:
            return accumulator
    raise AssertionError(f"no TensorBoard folder under {run} holds the logged loss")


def test_plot_log_writes_image_events_tensorboard_reads(tensorboard_run, tmp_path, capsys):
    code, out, err = run_cli(["plot", str(tensorboard_run), "--out", str(tmp_path), "--log"], capsys)
    assert code == 0, err
    images = load_events(tensorboard_run).Tags()["images"]
    for name in ("training", "paper", "sharpness", "loss_changes", "around_spikes"):
        assert f"lmprobe/{name}" in images
    event = load_events(tensorboard_run).Images("lmprobe/paper")[-1]
    assert event.width > 300 and event.height > 200 and event.encoded_image_string[:4] == b"\x89PNG"


def test_mine_log_writes_the_pairs_table(tensorboard_run, capsys):
    code, out, err = run_cli(["mine", str(tensorboard_run), "--log"], capsys)
    assert code == 0, err
    tensors = load_events(tensorboard_run).Tags()["tensors"]
    tag = next(t for t in tensors if t.startswith("lmprobe/mine/pairs-by-"))
    text = load_events(tensorboard_run).Tensors(tag)[-1].tensor_proto.string_val[0].decode()
    assert text.startswith("| # | group 1 | group 2 | corr | strength | steps |")


def test_log_without_a_tensorboard_log_is_one_line(tiny_vision_run, tmp_path, capsys):
    for argv in (["plot", str(tiny_vision_run), "--out", str(tmp_path), "--log"], ["mine", str(tiny_vision_run), "--log"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and "train.report_to=tensorboard" in err and "\n" not in err.strip()
