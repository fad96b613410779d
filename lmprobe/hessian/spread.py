"""How much a sharpness value depends on its sample: the top eigenvalue on K disjoint parts.

The sharpness a run logs is the top Hessian eigenvalue of the mean loss over a finite sample of
training examples. When a few examples carry most of the curvature (outliers), that number says more
about which examples were drawn than about the loss. `sharpness_spread` splits the sample into K
disjoint parts of equal size (part j: examples j*n .. (j+1)*n - 1 of the sample, n = N // K, kept in
batches of the sample's batch size) and measures the top eigenvalue of each part's mean loss:

    values, min, median, max, relative_spread = (max - min) / median

Each part holds N/K examples, so the parts disagree more than disjoint samples of the full size N
would (the scatter of a mean shrinks roughly as 1/sqrt(size)): parts agreeing within x mean that
the full sample's value is stable to well within x.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

import torch

from lmprobe.errors import LmprobeError

Batch = dict[str, torch.Tensor]


def split_parts(batches: Sequence[Batch], parts: int) -> list[list[Batch]]:
    """The examples of `batches` in `parts` disjoint, equal parts, each as batches of at most the
    original batch size (all of equal size, so a part's loss is the mean over its examples).
    Examples left over by N % parts are not used."""
    if parts < 2:
        raise LmprobeError(f"a spread needs at least 2 parts, got {parts}")
    if not batches:
        raise LmprobeError("a spread needs a sample to split; got no batches")
    keys = list(batches[0])
    examples = {k: torch.cat([b[k] for b in batches]) for k in keys}
    total = len(examples[keys[0]])
    per_part = total // parts
    if per_part < 1:
        raise LmprobeError(f"the sample has {total} examples, too few for {parts} disjoint parts; "
                           f"use fewer parts or a larger sample (--batches, --batch-size)")
    batch_size = min(len(batches[0][keys[0]]), per_part)
    while per_part % batch_size:  # equal batches: the mean of batch means is the mean over examples
        batch_size -= 1
    out = []
    for j in range(parts):
        start = j * per_part
        out.append([{k: v[start + i : start + i + batch_size] for k, v in examples.items()}
                    for i in range(0, per_part, batch_size)])
    return out


def spread_summary(values: Sequence[float]) -> dict[str, Any]:
    """min, median, max and (max - min) / |median| of per-part eigenvalues."""
    values = [float(v) for v in values]
    median = statistics.median(values)
    low, high = min(values), max(values)
    relative = (high - low) / abs(median) if median else float("inf")
    return {"values": values, "min": low, "median": median, "max": high, "relative_spread": relative,
            "max_over_min": high / low if low > 0 else float("inf")}


def sharpness_spread(model, loss_fn, batches: Sequence[Batch], parts: int, *, block: str | None = None,
                     tol: float = 1e-3, max_iter: int = 60, seed: int = 0) -> dict[str, Any]:
    """The top Hessian eigenvalue of each of `parts` disjoint parts of the sample, and their spread.

    Keys: parts, examples_per_part, batches_per_part, values, min, median, max, relative_spread,
    max_over_min, converged (per part), n_products, seconds.
    """
    import time

    from lmprobe.hessian.sharpness import measure_sharpness

    start = time.perf_counter()
    split = split_parts(batches, parts)
    reports = [measure_sharpness(model, loss_fn, part, block=block, tol=tol, max_iter=max_iter, seed=seed)
               for part in split]
    first = next(iter(split[0][0].values()))
    result = {"parts": parts, "examples_per_part": len(first) * len(split[0]), "batches_per_part": len(split[0])}
    result.update(spread_summary([r["sharpness"] for r in reports]))
    result["converged"] = [bool(r["converged"]) for r in reports]
    result["n_products"] = sum(r["n_products"] for r in reports)
    result["seconds"] = time.perf_counter() - start
    return result
