"""The analysis commands on vision runs, with the same flags as on text runs, and the planted answer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmprobe.cli import main


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_mine_table_names_classes_and_image_ids(tiny_vision_run, capsys):
    code, out, err = run_cli(["mine", "--checkpoint", str(tiny_vision_run), "--top", "3"], capsys)
    assert code == 0, err
    assert "5 records x 64 probe examples" in " ".join(out.split())
    assert "img " in out and "[" in out


def test_mine_json_carries_image_ids_and_keys(tiny_vision_run, capsys):
    code, out, err = run_cli(["mine", str(tiny_vision_run), "--json", "--by", "target", "--steps", "0:8"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["key_names"] == ["target"]
    riser = data["movers"]["window_riser_described"][0]
    assert riser["context"].startswith("img ") and riser["target"] in ("hstripes", "vstripes", "checker", "ring")


def test_sharpness_measures_the_hooks_loss(tiny_vision_run, capsys):
    """By default `lmprobe sharpness` uses the hook's batches: the same number metrics.jsonl logged."""
    from lmprobe.train.metrics_log import read_metrics

    code, out, err = run_cli(["sharpness", str(tiny_vision_run), "--json", "--tol", "1e-4", "--max-iter", "100"], capsys)
    assert code == 0, err
    report = json.loads(out)
    logged = [m for m in read_metrics(tiny_vision_run / "metrics.jsonl") if m["step"] == 8][0]
    bound = logged["sharpness_error_bound"] + report["error_bounds"][0]
    assert abs(report["sharpness"] - logged["sharpness"]) <= bound
    assert report["converged"] and report["gd_threshold"] == pytest.approx(40.0)
    code, out, err = run_cli(["sharpness", str(tiny_vision_run), "--batches", "2", "--batch-size", "16"], capsys)
    assert code == 0 and "2/lr" in out


def test_plot_and_examples_on_a_vision_run(tiny_vision_run, tmp_path, capsys):
    code, out, err = run_cli(["plot", str(tiny_vision_run), "--out", str(tmp_path / "fig")], capsys)
    assert code == 0, err
    assert (tmp_path / "fig" / "training.png").read_bytes()[:4] == b"\x89PNG"
    code, out, err = run_cli(["examples", str(tiny_vision_run), "--out", str(tmp_path / "ex")], capsys)
    assert code == 0, err
    assert "Rho-1" in out and (tmp_path / "ex" / "examples.parquet").is_file()


def test_planted_pair_is_recovered_first(planted_vision_run, capsys):
    """Default `lmprobe mine` on a short GD run of the synthetic data: the planted sky pair first,
    precision and recall >= 0.9 for the planted groups, and an image grid written for it."""
    code, out, err = run_cli(["mine", str(planted_vision_run), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    planted = json.loads((planted_vision_run / "data.json").read_text())["planted"]["pairs"]
    groups = data["groups"]
    pairs = [(groups[p["group_a"]]["key"], groups[p["group_b"]]["key"]) for p in data["pairs"]]
    assert pairs, "no opposing pair found"
    top = pairs[0]
    sky = planted[0]
    assert {top[0]["feature"], top[1]["feature"]} == {sky["feature"]}
    assert {top[0]["target"], top[1]["target"]} == set(sky["classes"])
    # the reported groups are exactly the planted ones: precision and recall of members
    keys = np.load(planted_vision_run / "probe" / "probe.npz")
    for side in (groups[data["pairs"][0]["group_a"]], groups[data["pairs"][0]["group_b"]]):
        truth = set(np.flatnonzero((keys["feature"] == sky["feature"]) & (keys["target"] == side["key"]["target"])))
        found = set(side["members"])
        assert len(found & truth) / len(found) >= 0.9 and len(found & truth) / len(truth) >= 0.9
    grid = planted_vision_run / "figures" / "pair-01.png"
    assert grid.read_bytes()[:4] == b"\x89PNG" and f"wrote {grid}" in err
