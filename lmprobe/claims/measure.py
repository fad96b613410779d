"""One run's numbers for every claim, from the code `lmprobe events` and `lmprobe mine` run (same
defaults), so a claim's number is what a user would read off those commands."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

SHARP_DIRECTION = "sharp direction"


def measure_run(run_dir: Path) -> dict[str, Any]:
    from lmprobe.commands.events import compute_events
    from lmprobe.commands.mine import complexity_ladder
    from lmprobe.domain import open_view
    from lmprobe.analysis.losses import load_losses
    from lmprobe.mining import mine

    view = open_view(str(run_dir), None, None)
    report, trace, metrics = compute_events(view)
    matrix = load_losses(view)
    keys = view.keys()
    result = mine(matrix.losses, matrix.steps, keys, by=view.groupings[0], n_clusters=0,
                  ladder=complexity_ladder(view.groupings, keys))
    numbers: dict[str, Any] = {}
    numbers.update(sharpness_numbers(metrics or []))
    numbers.update(spike_numbers(report))
    numbers["n_pairs"] = len(result.pairs)
    numbers["top_pair_corr"] = float(result.pairs[0].corr) if result.pairs else None
    numbers["frac_rose_median"] = float(np.nanmedian(report.intervals.frac_rose)) if report.intervals.n_intervals else None
    complexity = result.complexity
    numbers["complexity_tau"] = None if complexity is None or complexity.tau is None else float(complexity.tau)
    numbers["complexity_p"] = None if complexity is None or complexity.p_value is None else float(complexity.p_value)
    numbers.update(sgd_numbers(run_dir, matrix.losses, result, keys))
    numbers.update(block_numbers(run_dir))
    return numbers


def block_numbers(run_dir: Path) -> dict[str, Any]:
    from lmprobe.claims.blocks import block_sharpness

    blocks = block_sharpness(run_dir)
    return {"sharpest_block_depth": blocks["sharpest_depth"], "sharpest_block": blocks["sharpest"],
            "block_sharpness": dict(zip(blocks["blocks"], blocks["sharpness"]))}


def sgd_numbers(run_dir: Path, losses, result, keys, top: int = 3) -> dict[str, Any]:
    """Under mini-batch SGD: the share of the variance of the probe's mean loss change carried by
    the examples of the top `top` opposing pairs' groups, and their share of the examples."""
    import yaml

    from lmprobe.config import OptimConfig, from_dict, is_full_batch
    from lmprobe.mining.mine import rest_members

    optim = from_dict(OptimConfig, yaml.safe_load((run_dir / "config.yaml").read_text())["optim"], "optim.")
    out: dict[str, Any] = {"sgd_variance_share": None, "sgd_example_share": None}
    if is_full_batch(optim) or optim.name != "sgd" or not result.pairs:
        return out
    members = []
    for pair in result.pairs[:top]:
        members.append(result.groups[pair.group_a].members)
        members.append(rest_members(result, pair, keys) if pair.is_one_vs_rest else result.groups[pair.group_b].members)
    chosen = np.unique(np.concatenate(members))
    share, example_share = variance_share(np.asarray(losses, dtype=np.float64), chosen)
    out.update(sgd_variance_share=share, sgd_example_share=example_share)
    return out


def variance_share(losses: np.ndarray, members: np.ndarray) -> tuple[float | None, float]:
    """cov(X, D) / var(D), D the mean loss change per probe interval and X the part of it carried by
    `members` (their summed change / n): the members' shares of var(D) over a partition sum to 1."""
    finite = np.isfinite(losses).all(axis=0)
    changes = np.diff(losses[:, finite], axis=0)
    inside = np.zeros(losses.shape[1], dtype=bool)
    inside[members] = True
    inside = inside[finite]
    total = changes.mean(axis=1)
    part = changes[:, inside].sum(axis=1) / changes.shape[1]
    variance = float(np.var(total))
    share = float(np.mean((part - part.mean()) * (total - total.mean())) / variance) if variance > 0 else None
    return share, float(inside.mean())


def sharpness_numbers(metrics) -> dict[str, Any]:
    """Whether sharpness / threshold reached 1, and its median from the first crossing on. Under
    mini-batch SGD the sharpness is the batch sharpness (of the step's own mini-batch, which sits at
    2/lr there while the full-batch sharpness stays below); otherwise the series `lmprobe events`
    reads (GD: sharpness vs 2/lr; Adam: preconditioned sharpness vs 38/lr)."""
    from lmprobe.events.series import stability_series

    metrics = list(metrics)
    batch = [(r["step"], r["batch_sharpness"], r["sharpness_threshold"]) for r in metrics
             if isinstance(r.get("batch_sharpness"), (int, float)) and isinstance(r.get("sharpness_threshold"), (int, float))]
    if batch:
        ratio = np.array([value / threshold for _, value, threshold in sorted(batch)])
    else:
        found = stability_series(metrics)
        if found is None:
            return {"sharpness_logged": False, "crossed": None, "median_ratio_after_crossing": None, "max_ratio": None}
        ratio = found[3] / found[4]
    above = np.flatnonzero(ratio >= 1.0)
    return {"sharpness_logged": True, "crossed": bool(above.size), "max_ratio": float(np.max(ratio)),
            "batch_sharpness": bool(batch),
            "median_ratio_after_crossing": float(np.median(ratio[above[0]:])) if above.size else None}


def spike_numbers(report) -> dict[str, Any]:
    """Spikes following instabilities (share aligned, the test's p), the sharp direction's sides
    at instabilities, and the share of a spike's rise carried by the top 1% of examples."""
    out: dict[str, Any] = {"n_spikes": len(report.spikes), "share_aligned": None, "p_follow": None,
                           "n_instabilities": 0, "sides_apart_share": None, "top1_share_at_spikes": None}
    instability = report.instability
    if instability is not None:
        out["n_instabilities"] = len(instability.instabilities)
        if instability.n_spikes:
            out["share_aligned"] = instability.aligned / instability.n_spikes
        if instability.test is not None and math.isfinite(instability.test.p):
            out["p_follow"] = float(instability.test.p)
        sides = [s for row in instability.instabilities for s in row.sides if s.what == SHARP_DIRECTION]
        if sides:
            out["sides_apart_share"] = sum(1 for s in sides if s.opposite and s.significant) / len(sides)
    shares = [report.intervals.share_top1[e.interval] for e in report.events if e.spike is not None]
    shares = [float(v) for v in shares if np.isfinite(v)]
    if shares:
        out["top1_share_at_spikes"] = float(np.median(shares))
    return out
