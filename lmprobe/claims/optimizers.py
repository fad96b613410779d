"""The optimizer study: one toy and the CIFAR-10 CNN under seven optimizers, side by side.

The paper's case study asks why Adam, batch norm and gradient clipping train better than plain
(S)GD and answers: they damp the swings that opposing signals cause along the sharp directions.
Each model is trained, per seed, as shipped (full-batch GD) and under six variants (overrides of
the same config, so data, model and probe are identical); then, per run:

* final loss: the probe's mean loss (every training example) at its last record;
* sharpness / own threshold: median over the second half of the run of the sharpness against the
  optimizer's own edge of stability (GD: 2/lr; heavy ball: (2+2b)/lr; Adam: the preconditioned
  sharpness against 38/lr; SGD: the batch sharpness of the step's mini-batch against its threshold);
  sign descent has no such threshold (a sign step has the same size at any curvature);
* swing: the opposed swing amplitude sqrt(-cov) of the detrended loss changes of the top opposing
  pair that `lmprobe mine` finds in the GD run of the same seed, measured on the same examples in
  every variant (loss units per probe interval), and its ratio to GD's;
* spikes: spikes of the probe's mean loss (`lmprobe events --series probe`).

The verdict on "damps the swings" (Adam, batch norm, clipping; fixed before the first run):
yes when every seed's swing is below GD's and the mean ratio's 95% interval lies below 1; partly
when the mean ratio is below 1; no otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmprobe.claims.runs import RunSpec
from lmprobe.claims.stats import Interval, mean_interval

REFERENCE = "gd"
DAMPERS = ("adam", "gd-clip", "gd-batchnorm")  # what the paper says damps the swings


@dataclass(frozen=True)
class StudyModel:
    name: str
    script: str
    config: str
    sgd_batch: int  # mini-batch of the SGD variants
    adam_lr: float  # Adam's (and sign descent's) learning rate
    clip: float  # the clipping variant's max gradient norm
    quick: bool
    uses_cifar: bool = False
    overrides: tuple[str, ...] = ()  # key=value on top of the config, for every variant


# clip: about the 75th percentile of the shipped GD run's gradient norm (seed 0), so clipping acts on the
# largest quarter of steps, the spikes. Adam at a common default for the model's scale; sign descent at
# Adam's lr (Adam's step is close to a sign step when a coordinate's gradient keeps its sign).
STUDY_MODELS = (
    StudyModel("toy-polynomial", "cli/train_toy.py", "configs/toy/polynomial.yaml", sgd_batch=32, adam_lr=0.01,
               clip=0.01, quick=True, overrides=("sharpness.every=10",)),
    StudyModel("cifar-cnn", "cli/train_vision.py", "configs/vision/cifar-cnn-optimizers.yaml", sgd_batch=50,
               adam_lr=1e-3, clip=0.25, quick=False, uses_cifar=True),
)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str


VARIANTS = (
    Variant("gd", "full-batch GD, as shipped"),
    Variant("gd-clip", "full-batch GD, gradient norm clipped"),
    Variant("gd-batchnorm", "full-batch GD, batch norm before each hidden activation"),
    Variant("adam", "full-batch Adam"),
    Variant("sign", "full-batch sign descent at Adam's lr"),
    Variant("sgd", "mini-batch SGD at GD's lr"),
    Variant("sgd-momentum", "mini-batch SGD, heavy ball 0.9 at lr/10 (the same effective step)"),
)


def variant_overrides(model: StudyModel, variant: str, gd_lr: float) -> tuple[str, ...]:
    """key=value overrides that turn the model's shipped GD config into `variant`."""
    table = {
        "gd": (),
        "gd-clip": (f"optim.grad_clip={model.clip}",),
        "gd-batchnorm": ("model.batch_norm=true",),
        "adam": ("optim.name=adamw", f"optim.lr={model.adam_lr}", "optim.full_batch=true"),
        "sign": ("optim.name=sign", f"optim.lr={model.adam_lr}", "optim.full_batch=true"),
        "sgd": ("optim.name=sgd", f"train.batch_size={model.sgd_batch}"),
        "sgd-momentum": ("optim.name=sgd", f"train.batch_size={model.sgd_batch}", "optim.momentum=0.9",
                         f"optim.lr={gd_lr / 10:g}"),
    }
    return table[variant]


def config_lr(config: str) -> float:
    import yaml

    from lmprobe.claims.runs import ROOT

    path = Path(config) if Path(config).is_absolute() else ROOT / config
    return float(yaml.safe_load(path.read_text())["optim"]["lr"])


def study_specs(models: Sequence[StudyModel], seeds: int, cifar_source: str | None) -> list[RunSpec]:
    specs = []
    for model in models:
        lr = config_lr(model.config)
        data = (f"data.source={cifar_source}",) if model.uses_cifar and cifar_source else ()
        for variant in VARIANTS:
            overrides = data + model.overrides + variant_overrides(model, variant.name, lr)
            specs += [RunSpec(f"opt-{model.name}-{variant.name}", model.script, model.config, overrides, seed,
                              may_fail=variant.name != REFERENCE) for seed in range(seeds)]
    return specs


# ---------------------------------------------------------------- per-run numbers


def reference_pair(run_dir: Path) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Members of the top opposing pair `lmprobe mine` finds in a run (the rest, for one-vs-rest)
    and the pair's description; None when it finds none."""
    from lmprobe.analysis.losses import load_losses
    from lmprobe.domain import open_view
    from lmprobe.mining import mine
    from lmprobe.mining.mine import rest_members

    view = open_view(str(run_dir), None, None)
    matrix = load_losses(view)
    keys = view.keys()
    result = mine(matrix.losses, matrix.steps, keys, by=view.groupings[0], n_clusters=0)
    if not result.pairs:
        return None
    pair = result.pairs[0]
    a = result.groups[pair.group_a].members
    b = rest_members(result, pair, keys) if pair.is_one_vs_rest else result.groups[pair.group_b].members
    names = result.key_names
    label = " vs ".join(", ".join(f"{n}={v}" for n, v in zip(names, key)) for key in (pair.key_a, pair.key_b))
    return np.asarray(a), np.asarray(b), label


def opposed_swing(losses: np.ndarray, members_a: np.ndarray, members_b: np.ndarray) -> float:
    """sqrt(-cov) of two groups' mean loss changes per probe interval, each detrended on the mean
    change of the other examples: the miner's swing amplitude (OpposingPair.score), in loss units."""
    from lmprobe.mining.opposing import pair_scores

    changes = np.diff(np.asarray(losses, dtype=np.float64), axis=0)
    rest = np.ones(changes.shape[1], dtype=bool)
    rest[members_a] = False
    rest[members_b] = False
    trend = changes[:, rest].mean(axis=1) if rest.any() else np.zeros(changes.shape[0])
    change_a = changes[:, members_a].mean(axis=1)
    change_b = changes[:, members_b].mean(axis=1)
    return float(pair_scores(change_a[:, None], change_b[:, None], trend[:, None])[0])


def own_threshold_ratio(metrics: Sequence[dict[str, Any]], optimizer: str, full_batch: bool) -> float | None:
    """Median over the second half of the run of sharpness / the optimizer's own threshold."""
    if optimizer == "sign":
        return None
    value_key, threshold_key = "sharpness", "sharpness_threshold"
    if optimizer == "adamw":
        value_key, threshold_key = "preconditioned_sharpness", "preconditioned_threshold"
    elif optimizer == "sgd" and not full_batch:
        value_key = "batch_sharpness"
    rows = [(r["step"], r[value_key] / r[threshold_key]) for r in metrics
            if isinstance(r.get(value_key), (int, float)) and isinstance(r.get(threshold_key), (int, float))]
    if not rows:
        return None
    last = max(s for s, _ in rows)
    late = [ratio for step, ratio in rows if step >= last / 2]
    return float(np.median(late))


def measure_variant(run_dir: Path, pair: tuple[np.ndarray, np.ndarray, str] | None) -> dict[str, Any]:
    import yaml

    from lmprobe.commands.events import compute_events
    from lmprobe.config import OptimConfig, from_dict, is_full_batch
    from lmprobe.domain import open_view

    view = open_view(str(run_dir), None, None)
    report, trace, metrics = compute_events(view, series="probe")
    losses = np.asarray(trace.losses, dtype=np.float64)
    finite = np.isfinite(losses).all(axis=1)
    last = losses[finite][-1] if finite.any() else None
    optim = from_dict(OptimConfig, yaml.safe_load((run_dir / "config.yaml").read_text())["optim"], "optim.")
    numbers: dict[str, Any] = {
        "final_loss": None if last is None else float(last.mean()),
        "threshold_ratio": own_threshold_ratio(metrics or [], optim.name, is_full_batch(optim)),
        "n_spikes": len(report.spikes),
        "swing": None,
    }
    if pair is not None and finite.all() and losses.shape[1] > max(pair[0].max(), pair[1].max()):
        numbers["swing"] = opposed_swing(losses, pair[0], pair[1])
    return numbers


# ---------------------------------------------------------------- summary over seeds

COLUMNS = (  # (key, header)
    ("final_loss", "final loss"),
    ("threshold_ratio", "sharpness / own threshold"),
    ("swing", "swing of GD's top pair"),
    ("swing_ratio", "swing / GD's swing"),
    ("n_spikes", "loss spikes"),
)


@dataclass
class StudyRow:
    model: str
    variant: str
    per_seed: dict[str, list[float | None]]
    intervals: dict[str, Interval]
    damps: str | None  # the verdict for the variants the paper says damp the swings

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "variant": self.variant, "per_seed": self.per_seed,
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()}, "damps_swings": self.damps}


def damping_verdict(ratios: Sequence[float | None], interval: Interval) -> str:
    """yes: every seed below GD's swing and the interval of the mean ratio below 1; partly: the mean
    ratio below 1; no: otherwise (the rule in this module's docstring)."""
    finite = [r for r in ratios if r is not None and math.isfinite(r)]
    if not finite:
        return "not measured"
    if all(r < 1 for r in finite) and len(finite) > 1 and interval.high < 1:
        return "yes"
    return "partly" if interval.mean < 1 else "no"


def summarise(numbers: dict[tuple[str, str], list[dict[str, Any]]]) -> list[StudyRow]:
    """(model, variant) -> its seeds' numbers, in seed order -> one row per (model, variant)."""
    rows = []
    for (model, variant), seeds in numbers.items():
        reference = numbers.get((model, REFERENCE), [])
        per_seed: dict[str, list[float | None]] = {}
        for key, _ in COLUMNS:
            if key == "swing_ratio":
                per_seed[key] = [ratio(s.get("swing"), r.get("swing")) for s, r in zip(seeds, reference)]
            else:
                per_seed[key] = [None if s.get(key) is None else float(s[key]) for s in seeds]
        intervals = {key: mean_interval(values) for key, values in per_seed.items()}
        damps = damping_verdict(per_seed["swing_ratio"], intervals["swing_ratio"]) if variant in DAMPERS else None
        rows.append(StudyRow(model, variant, per_seed, intervals, damps))
    return rows


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or not reference > 0:
        return None
    return float(value) / float(reference)
