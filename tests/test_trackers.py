"""train.report_to: the logged metrics also go to Accelerate's trackers (TensorBoard here)."""

from __future__ import annotations

from lmprobe.train.launch import main
from lmprobe.train.metrics_log import read_metrics


def test_tensorboard_event_files_carry_the_logged_metrics(tiny_vision_config, tmp_path):
    assert main(["--config", str(tiny_vision_config), "--name", "tb", "--no-progress", f"out_dir={tmp_path}",
                 "train.report_to=tensorboard", "train.steps=4"], domain="vision") == 0
    events = list((tmp_path / "tb" / "trackers").rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file was written"
    data = b"".join(path.read_bytes() for path in events)
    logged = {key for record in read_metrics(tmp_path / "tb" / "metrics.jsonl") for key in record if key != "step"}
    for key in ("loss", "val_loss", "sharpness"):
        assert key in logged and key.encode() in data


def test_an_unknown_tracker_is_one_line_before_any_directory(tiny_vision_config, tmp_path, capsys):
    assert main(["--config", str(tiny_vision_config), "--name", "bad", "--no-progress", f"out_dir={tmp_path}",
                 "train.report_to=comet"], domain="vision") == 2
    err = capsys.readouterr().err.strip()
    assert "train.report_to names 'comet'" in err and "\n" not in err
    assert not (tmp_path / "bad").exists()
