"""The toy domain: data models, models, the two default runs (edge of stability, opposing planted
groups, mined first), the analysis commands on a toy run, and the feature-scale sweep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lmprobe.cli import main as cli_main
from lmprobe.config import from_dict
from lmprobe.errors import LmprobeError
from lmprobe.train.metrics_log import read_metrics
from lmprobe.trace import read_trace
from toy.config import ToyConfig, ToyDataConfig
from toy.data import make_data

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "toy"


def run_cli(argv, capsys):
    code = cli_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def train(config: Path, out: Path, name: str, *overrides: str) -> Path:
    from lmprobe.train.launch import main

    assert main(["--config", str(config), "--name", name, "--no-progress", f"out_dir={out}", *overrides],
                domain="toy") == 0
    return out / name


@pytest.fixture(scope="module")
def linear_run(tmp_path_factory) -> Path:
    """The shipped default, unchanged: linear-opposing, 1000 steps of full-batch GD."""
    return train(CONFIGS / "linear-opposing.yaml", tmp_path_factory.mktemp("toy"), "linear")


@pytest.fixture(scope="module")
def polynomial_run(tmp_path_factory) -> Path:
    """The shipped polynomial config, unchanged: 1500 steps of full-batch GD."""
    return train(CONFIGS / "polynomial.yaml", tmp_path_factory.mktemp("toy"), "polynomial")


# --- data and models -------------------------------------------------------------------------

def test_opposing_data_plants_one_feature_for_both_labels():
    data = make_data(ToyDataConfig(), seed=0)
    x, y, keys = data.train.x, data.train.y, data.train.keys
    present = keys["feature"] == 1
    assert present.sum() == round(0.2 * 512) and set(np.unique(keys["feature"])) == {-1, 1}
    assert np.all(x[present, -1] == 4.0) and np.all(x[~present, -1] == 0.0)  # one value, both labels
    assert (y[present] > 0).sum() == (y[present] < 0).sum()  # alone, x1 predicts nothing
    assert np.array_equal(keys["target"], (y > 0).astype(np.int64))
    # the genuine signal: x0's mean along (1, ..., 1)/sqrt(dim) is y * signal
    along = x[:, :-1].sum(1) / np.sqrt(8)
    assert abs(np.mean(along * y) - 0.05) < 0.01
    again = make_data(ToyDataConfig(), seed=0)
    assert np.array_equal(again.train.x, x) and not np.array_equal(make_data(ToyDataConfig(), seed=1).train.x, x)
    assert data.summary()["planted_groups"] == {"y=-1": 51, "y=+1": 51}


def test_agree_fraction_unbalances_the_feature_groups():
    data = make_data(ToyDataConfig(agree_fraction=0.75), seed=0)
    keys = data.train.keys
    present = keys["feature"] == 1
    assert (keys["target"][present] == 1).sum() == round(0.75 * present.sum())


def test_polynomial_data_puts_opposing_outliers_on_the_curve_grid():
    cfg = ToyDataConfig(kind="polynomial", n_train=256, n_val=128, feature_scale=3.0, feature_fraction=0.1)
    data = make_data(cfg, seed=0)
    x, y, keys = data.train.x, data.train.y, data.train.keys
    grid = x[:, 0]
    assert np.allclose(grid, np.linspace(-1, 1, 256), atol=1e-6)
    curve = 2 * grid.astype(np.float64) ** 3 - grid
    side = np.where(keys["target"] == 1, 1.0, np.where(keys["target"] == 0, -1.0, 0.0))
    assert np.allclose(y, curve + 0.3 * side, atol=1e-5)
    present = keys["feature"] == 1
    assert np.array_equal(present, side != 0) and np.all(x[present, 1] == 3.0) and np.all(x[~present, 1] == 0)
    assert abs((side == 1).sum() - (side == -1).sum()) <= 1 and present.sum() == 26
    assert np.all(np.abs(data.val.x[:, 0]) <= 1) and not np.isin(data.val.x[:, 0], grid).all()


@pytest.mark.parametrize("section, bad, message", [
    ("data", {"kind": "circle"}, "must be one of opposing, polynomial"),
    ("data", {"feature_fraction": 0.0}, "feature_fraction"),
    ("data", {"kind": "polynomial", "coefficients": "1,x"}, "coefficients"),
    ("model", {"arch": "cnn"}, "must be one of linear, mlp"),
])
def test_bad_toy_config_is_one_line(section, bad, message):
    from toy.task import ToyTask

    with pytest.raises(LmprobeError, match=message):
        ToyTask(from_dict(ToyConfig, {section: bad}))


@pytest.mark.parametrize("arch", ["linear", "mlp"])
def test_models_save_and_load_exactly(arch, tmp_path):
    from toy.models import build_model, load_model

    torch.manual_seed(0)
    model = build_model(arch, 3, 8, 2, "tanh", 0.5)
    model.save_pretrained(tmp_path / arch)
    again = load_model(tmp_path / arch)
    x = torch.randn(5, 3)
    assert torch.equal(model(x), again(x)) and model(x).shape == (5,)
    if arch == "linear":  # f(x) = w2^T W1 x: no biases, so f(-x) = -f(x)
        assert torch.allclose(model(-x), -model(x)) and not any("bias" in n for n, _ in model.named_parameters())


# --- the default runs ------------------------------------------------------------------------

def sharpness_series(run: Path) -> tuple[np.ndarray, np.ndarray, float]:
    rows = [m for m in read_metrics(run / "metrics.jsonl") if m.get("sharpness") is not None]
    steps = np.array([m["step"] for m in rows])
    return steps, np.array([m["sharpness"] for m in rows]), rows[-1]["two_over_lr"]


def planted_groups(run: Path) -> tuple[np.ndarray, np.ndarray]:
    keys = np.load(run / "probe" / "probe.npz")
    return (keys["feature"] == 1) & (keys["target"] == 1), (keys["feature"] == 1) & (keys["target"] == 0)


def oscillating_window_correlation(run: Path) -> tuple[float, int]:
    """Correlation of the planted groups' step-to-step mean loss changes, each detrended on the mean
    change of every other example, from the first step the sharpness reaches 0.9 x 2/lr to the end."""
    steps, sharp, threshold = sharpness_series(run)
    start = int(steps[np.argmax(sharp >= 0.9 * threshold)])
    trace = read_trace(run)
    rows = trace.steps >= start
    losses = np.asarray(trace.losses[rows], dtype=np.float64)
    a, b = planted_groups(run)
    changes = [np.diff(losses[:, m].mean(1)) for m in (a, b, ~(a | b))]
    rest = np.stack([np.ones_like(changes[2]), changes[2]], 1)
    da, db = (c - rest @ np.linalg.lstsq(rest, c, rcond=None)[0] for c in changes[:2])
    return float(np.corrcoef(da, db)[0, 1]), start


@pytest.mark.parametrize("which", ["linear_run", "polynomial_run"])
def test_default_run_sharpens_to_the_edge_of_stability(which, request):
    run = request.getfixturevalue(which)
    steps, sharp, threshold = sharpness_series(run)
    assert sharp.max() >= 0.9 * threshold, (sharp.max(), threshold)
    early = sharp[: max(1, len(sharp) // 10)].mean()
    assert early < 0.75 * threshold  # progressive sharpening: it starts well below 2/lr
    late = sharp[steps >= steps[np.argmax(sharp >= 0.9 * threshold)]]
    assert 0.5 * threshold < np.median(late) < 1.5 * threshold  # and then hovers around it


@pytest.mark.parametrize("which", ["linear_run", "polynomial_run"])
def test_planted_groups_oscillate_out_of_phase(which, request):
    run = request.getfixturevalue(which)
    corr, start = oscillating_window_correlation(run)
    assert corr < -0.5, (corr, start)


@pytest.mark.parametrize("which", ["linear_run", "polynomial_run"])
def test_mine_ranks_the_planted_pair_first(which, request, capsys):
    run = request.getfixturevalue(which)
    code, out, err = run_cli(["mine", str(run), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["pairs"], "no opposing pair found"
    top = data["pairs"][0]
    groups = data["groups"]
    a, b = planted_groups(run)
    found = {frozenset(groups[top[side]]["members"]) for side in ("group_a", "group_b")}
    assert found == {frozenset(np.flatnonzero(a).tolist()), frozenset(np.flatnonzero(b).tolist())}
    assert top["corr"] < -0.3 and top["score"] > 0  # significant by construction; the whole trace, start included


def test_mine_table_describes_toy_examples(linear_run, capsys):
    code, out, err = run_cli(["mine", str(linear_run), "--top", "1"], capsys)
    assert code == 0, err
    assert "x1=4" in out and "y=+1" in out and "y=-1" in out


def test_sharpness_command_matches_the_hook(linear_run, capsys):
    code, out, err = run_cli(["sharpness", str(linear_run), "--json", "--tol", "1e-5", "--max-iter", "100"], capsys)
    assert code == 0, err
    report = json.loads(out)
    logged = [m for m in read_metrics(linear_run / "metrics.jsonl") if m.get("sharpness") is not None][-1]
    assert report["sharpness"] == pytest.approx(logged["sharpness"], rel=1e-3)


def test_events_and_plot_run_on_a_toy_run(linear_run, tmp_path, capsys):
    code, out, err = run_cli(["events", str(linear_run)], capsys)
    assert code == 0, err
    code, out, err = run_cli(["plot", str(linear_run), "--out", str(tmp_path), "--top", "1"], capsys)
    assert code == 0, err
    for name in ("training.png", "opposing_pairs.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"


def test_lone_checkpoint_opens_with_data(linear_run, tmp_path):
    """A bare model folder (config.json + weights, no run) is recognised by its model_type."""
    import shutil

    from lmprobe.domain import open_view

    lone = tmp_path / "lone"
    lone.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(linear_run / "checkpoints" / "step-001000" / name, lone / name)
    view = open_view(lone, data="opposing")
    assert view.domain == "toy" and view.probe.n_examples == 512
    model = view.load_model(lone)
    losses = view.probe.losses(model, view.probe.batch(0, 512)).detach().numpy()
    assert np.allclose(losses, read_trace(linear_run).losses[-1], atol=1e-5)


# --- the sweep -------------------------------------------------------------------------------

def test_sweep_prints_and_plots_sharpness_against_scale(tmp_path, capsys):
    from toy.sweep import main

    code = main(["--scales", "1,4", "--out", str(tmp_path), "train.steps=300", "sharpness.every=50",
                 "trace.every=10", "sharpness.alignment=false"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "sharpness against the opposing feature's scale" in out
    results = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["scale"] for r in results] == [1.0, 4.0]
    assert results[1]["sharpness_max"] > 4 * results[0]["sharpness_max"]  # grows like the scale squared
    assert (tmp_path / "sharpness_vs_scale.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "scale-4" / "config.yaml").is_file()
