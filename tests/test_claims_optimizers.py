"""The optimizer study of `lmprobe claims` on a tiny toy (2 seeds, 3 optimizers, one of them made
to diverge): every column, intervals and swing ratios equal to those computed by hand from the
per-run numbers, a diverged run reported rather than fatal; the swing, threshold and verdict rules
on planted inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmprobe.claims import optimizers
from lmprobe.claims.optimizers import (
    COLUMNS, StudyModel, Variant, damping_verdict, opposed_swing, own_threshold_ratio, summarise,
)
from lmprobe.claims.stats import mean_interval
from lmprobe.cli import main as cli_main

TINY = StudyModel("tiny-poly", "cli/train_toy.py", "configs/toy/polynomial.yaml", sgd_batch=32, adam_lr=0.01,
                  clip=0.01, quick=True, overrides=("train.steps=60", "train.checkpoint_every=60",
                                                    "sharpness.every=10"))
VARIANTS = (Variant("gd", "reference"), Variant("adam", "full-batch Adam"), Variant("sgd", "made to diverge"))


def test_opposed_swing_is_large_for_groups_moving_apart_and_zero_for_groups_moving_together():
    rng = np.random.default_rng(0)
    steps, n = 60, 40
    base = np.linspace(2.0, 1.0, steps)[:, None] + rng.normal(0, 0.01, (steps, n))
    wave = 0.3 * (-1.0) ** np.arange(steps)
    a, b = np.arange(0, 10), np.arange(10, 20)
    apart = base.copy()
    apart[:, a] += wave[:, None]
    apart[:, b] -= wave[:, None]
    together = base.copy()
    together[:, a] += wave[:, None]
    together[:, b] += wave[:, None]
    assert opposed_swing(apart, a, b) == pytest.approx(0.6, rel=0.05)  # |delta| = 0.6 per interval each side
    assert opposed_swing(together, a, b) == 0.0


def test_own_threshold_ratio_reads_each_optimizers_pair_of_keys():
    rows = [{"step": s, "sharpness": 10.0, "sharpness_threshold": 20.0, "batch_sharpness": 30.0,
             "preconditioned_sharpness": 19.0, "preconditioned_threshold": 38.0} for s in (10, 20, 30, 40)]
    assert own_threshold_ratio(rows, "gd", True) == pytest.approx(0.5)
    assert own_threshold_ratio(rows, "sgd", False) == pytest.approx(1.5)  # SGD: the batch sharpness
    assert own_threshold_ratio(rows, "adamw", True) == pytest.approx(0.5)  # preconditioned vs 38/lr
    assert own_threshold_ratio(rows, "sign", True) is None
    rows[0]["sharpness"] = 1000.0  # the first half of the run does not count
    assert own_threshold_ratio(rows, "gd", True) == pytest.approx(0.5)


@pytest.mark.parametrize("ratios, verdict", [([0.2, 0.3, 0.25], "yes"), ([0.2, 1.4, 0.3], "partly"),
                                             ([1.1, 1.3, 1.2], "no"), ([None, None, None], "not measured")])
def test_the_damping_verdict_flips_with_the_swing_ratios(ratios, verdict):
    assert damping_verdict(ratios, mean_interval(ratios)) == verdict


def test_summarise_pairs_each_seed_with_gds_swing_of_the_same_seed():
    numbers = {("m", "gd"): [{"swing": 2.0}, {"swing": 4.0}], ("m", "adam"): [{"swing": 1.0}, {"swing": 1.0}]}
    rows = {r.variant: r for r in summarise(numbers)}
    assert rows["adam"].per_seed["swing_ratio"] == [0.5, 0.25]
    assert rows["gd"].damps is None
    assert rows["adam"].damps == "partly"  # both seeds below GD's, but two seeds give a t interval up to 1.96
    numbers["m", "adam"].append({"swing": 1.0})
    numbers["m", "gd"].append({"swing": 3.0})
    assert {r.variant: r for r in summarise(numbers)}["adam"].damps == "yes"  # a third seed narrows it below 1


def test_only_optimizers_runs_the_study_alone():
    from lmprobe.commands.claims import select

    everything = optimizers.STUDY_MODELS  # read at call time, as select does
    models, _, study_models = select("optimizers", quick=True)
    assert models == [] and study_models == [m for m in everything if m.quick]
    models, _, study_models = select("toy-linear", quick=False)
    assert [m.name for m in models] == ["toy-linear"] and study_models == []
    models, _, study_models = select(None, quick=False)
    assert study_models == list(everything) and models


def test_the_shipped_study_covers_the_papers_optimizers():
    from lmprobe.claims.runs import ROOT

    assert {v.name for v in optimizers.VARIANTS} >= {"gd", "sgd", "sgd-momentum", "adam", "sign", "gd-clip",
                                                     "gd-batchnorm"}
    assert {m.name for m in optimizers.STUDY_MODELS} >= {"toy-polynomial", "cifar-cnn"}
    for model in optimizers.STUDY_MODELS:
        assert (ROOT / model.config).is_file()
        assert "model.batch_norm=true" in optimizers.variant_overrides(model, "gd-batchnorm", 0.1)


# --- end to end (last: the module fixture patches the study until the module ends) ---


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    real = optimizers.variant_overrides

    def overrides(model, variant, lr):  # plant a divergence: SGD at a huge step
        return real(model, variant, lr) + (("optim.lr=1000",) if variant == "sgd" else ())

    patch = pytest.MonkeyPatch()
    patch.setattr(optimizers, "STUDY_MODELS", (TINY,))
    patch.setattr(optimizers, "VARIANTS", VARIANTS)
    patch.setattr(optimizers, "variant_overrides", overrides)
    out = tmp_path_factory.mktemp("study")
    code = cli_main(["claims", "--only", "optimizers", "--quick", "--seeds", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    yield out, json.loads((out / "claims.json").read_text())["optimizers"]
    patch.undo()


def test_every_optimizer_gets_every_column_with_the_interval_of_its_seeds(study):
    out, data = study
    rows = {(r["model"], r["variant"]): r for r in data["rows"]}
    assert set(rows) == {("tiny-poly", v.name) for v in VARIANTS}
    for (model, variant), row in rows.items():
        runs = data["runs"][f"{model}/{variant}"]
        assert [r["seed"] for r in runs] == [0, 1]
        for key, _ in COLUMNS:
            assert len(row["per_seed"][key]) == 2
            if key != "swing_ratio":
                assert row["per_seed"][key] == [r.get(key) for r in runs]
            by_hand = mean_interval(row["per_seed"][key]).to_dict()
            assert row["intervals"][key] == pytest.approx(by_hand, nan_ok=True)
    gd, adam = data["runs"]["tiny-poly/gd"], data["runs"]["tiny-poly/adam"]
    expected = [a["swing"] / g["swing"] if a["swing"] is not None and g["swing"] else None for a, g in zip(adam, gd)]
    assert rows["tiny-poly", "adam"]["per_seed"]["swing_ratio"] == pytest.approx(expected)
    assert rows["tiny-poly", "adam"]["damps_swings"] in ("yes", "partly", "no", "not measured")
    assert rows["tiny-poly", "gd"]["damps_swings"] is None  # the reference is not judged
    assert all(r["final_loss"] is not None and np.isfinite(r["final_loss"]) for r in gd + adam)
    for name in ("optimizers.md", "optimizers.png"):
        assert (out / name).stat().st_size > 200


def test_a_diverged_run_is_a_result_not_a_crash(study):
    out, data = study
    assert data["diverged"] == ["tiny-poly/sgd seed 0", "tiny-poly/sgd seed 1"]
    assert all(r["diverged"] for r in data["runs"]["tiny-poly/sgd"])
    written = (out / "optimizers.md").read_text()
    assert "| tiny-poly | sgd | - |" in written and "Diverged" in written and "tiny-poly/sgd seed 1" in written
