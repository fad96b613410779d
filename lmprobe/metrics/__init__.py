"""Local `evaluate` metric modules (hub metrics are unreachable offline)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

METRICS_DIR = Path(__file__).parent


@lru_cache(maxsize=None)
def load_metric(name: str):
    import evaluate

    return evaluate.load(str(METRICS_DIR / name))


def perplexity(nll: np.ndarray) -> dict[str, float]:
    """{'loss', 'perplexity', 'n_tokens'} of per-token NLLs, via the local evaluate module."""
    metric = load_metric("token_perplexity")
    return metric.compute(nll=np.asarray(nll, dtype=np.float64).ravel().tolist())
