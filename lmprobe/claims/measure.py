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
    return numbers


def sharpness_numbers(metrics) -> dict[str, Any]:
    """Whether sharpness / threshold reached 1, and its median from the first crossing on."""
    from lmprobe.events.series import stability_series

    found = stability_series(list(metrics))
    if found is None:
        return {"sharpness_logged": False, "crossed": None, "median_ratio_after_crossing": None, "max_ratio": None}
    ratio = found[3] / found[4]
    above = np.flatnonzero(ratio >= 1.0)
    return {"sharpness_logged": True, "crossed": bool(above.size), "max_ratio": float(np.max(ratio)),
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
