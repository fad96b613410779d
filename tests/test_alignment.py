"""Which examples point along the sharp direction: per-example derivatives along the top
eigenvector, recorded by the training hook, and the "align" key the miner groups by."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from lmprobe.cli import main as lmprobe_main
from lmprobe.domain import open_view
from lmprobe.hessian.blocks import select_parameters
from lmprobe.train.alignment import (
    _double_backward,
    _ProbeLoss,
    alignment_signs,
    directional_derivatives,
    read_alignment,
)
from tests.planted_toy import train_toy


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, one_thread):
    return train_toy(tmp_path_factory.mktemp("planted") / "run", ["sharpness.every=2", "sharpness.max_iter=30"])


def per_example(model, batch):
    return nn.functional.cross_entropy(model(batch["x"]), batch["y"], reduction="none")


def test_forward_mode_matches_finite_differences_and_the_reverse_fallback(one_thread):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 3)).double()
    model(torch.randn(16, 5, dtype=torch.float64))  # batch-norm running statistics: eval mode must use them
    batches = [{"x": torch.randn(6, 5, dtype=torch.float64), "y": torch.randint(0, 3, (6,))} for _ in range(2)]
    named = select_parameters(model)
    dim = sum(p.numel() for _, p in named)
    directions = torch.randn(dim, 2, dtype=torch.float64)
    model.train()
    got = directional_derivatives(model, per_example, batches, named, directions)
    assert got.shape == (2, 12) and model.training  # mode restored
    model.eval()
    flat = torch.nn.utils.parameters_to_vector([p for _, p in named]).detach()
    for j in range(2):
        def losses_at(t):
            torch.nn.utils.vector_to_parameters(flat + t * directions[:, j], [p for _, p in named])
            with torch.no_grad():
                return torch.cat([per_example(model, b) for b in batches]).numpy()
        numeric = (losses_at(1e-6) - losses_at(-1e-6)) / 2e-6
        losses_at(0.0)
        np.testing.assert_allclose(got[j], numeric, rtol=1e-5, atol=1e-8)
        from lmprobe.hessian.blocks import unflatten

        tangents = unflatten(directions[:, j], [p for _, p in named])
        reverse = np.concatenate([_double_backward(_ProbeLoss(model, per_example), named, tangents, b).numpy()
                                  for b in batches])
        np.testing.assert_allclose(reverse, got[j], rtol=1e-8, atol=1e-10)


def test_negligible_derivatives_are_no_pull():
    assert alignment_signs(np.array([2.0, -1.0, 1e-6, np.nan, 0.0])).tolist() == [1, 0, -1, -1, -1]


def test_planted_opposing_groups_point_opposite_ways_along_the_top_eigenvector(planted_run):
    trace = read_alignment(planted_run)
    metrics = [json.loads(line) for line in (planted_run / "metrics.jsonl").read_text().splitlines()]
    assert trace.steps.tolist() == [r["step"] for r in metrics if "sharpness" in r]
    view = open_view(planted_run)
    keys = view.keys()
    assert {"align", "align-target"} <= set(view.groupings) and view.groupings[0] == "feature-target"
    for row in range(trace.n_records):  # at every measurement, not only the last
        signs = alignment_signs(np.asarray(trace.losses[row]))
        up = signs[keys["target"] == 1]
        down = signs[keys["target"] == 2]
        up_sign = np.bincount(up[up >= 0], minlength=2).argmax()
        assert np.mean(up == up_sign) >= 0.9 and np.mean(down == 1 - up_sign) >= 0.9


def test_mine_groups_by_alignment(planted_run, capsys):
    assert lmprobe_main(["mine", str(planted_run), "--by", "align", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    signs = open_view(planted_run).keys()["align"]
    assert result["key_names"] == ["align"]
    assert {g["key"]["align"]: g["size"] for g in result["groups"]} == \
        {v: int((signs == v).sum()) for v in (0, 1) if (signs == v).sum() >= 5}
    assert lmprobe_main(["mine", str(planted_run), "--by", "align-target"]) == 0


def test_vision_run_records_alignment_at_each_sharpness_step(tiny_vision_run):
    trace = read_alignment(tiny_vision_run)
    view = open_view(tiny_vision_run)
    assert trace.steps.tolist() == [4, 8] and trace.n_examples == view.probe.n_examples
    assert np.isfinite(trace.losses).all() and np.abs(trace.losses).max() > 0
    assert "align" in view.keys() and "align-target" in view.groupings


def test_rows_are_oriented_against_the_previous_row_or_the_mean():
    from lmprobe.train.alignment import orient_rows

    rows = np.array([[1.0, -3.0, 1.0], [2.0, 2.0, -1.0]])
    first = orient_rows(rows, {})
    assert first.tolist() == [[-1.0, 3.0, -1.0], [2.0, 2.0, -1.0]]  # mean derivative made >= 0
    later = orient_rows(rows, {1: np.array([1.0, -1.0, 0.0]), 2: np.array([-1.0, -1.0, 0.0])})
    assert later.tolist() == [[1.0, -3.0, 1.0], [-2.0, -2.0, 1.0]]  # agree with the last rows on disk
