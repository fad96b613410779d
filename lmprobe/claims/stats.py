"""Mean and a two-sided 95% Student-t interval over seeds (NaN-safe: a seed without a value is
left out and counted as missing)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# t(0.975, df) for df = 1..30; beyond, the normal 1.96 is within 2% of it
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)


@dataclass
class Interval:
    mean: float
    low: float
    high: float
    n: int  # seeds with a value
    missing: int  # seeds without one

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "-"
        if self.n == 1:
            return f"{self.mean:.{digits}g} (1 seed)"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"

    def to_dict(self) -> dict:
        def clean(v):
            return None if not math.isfinite(v) else v

        return {"mean": clean(self.mean), "low": clean(self.low), "high": clean(self.high), "n": self.n,
                "missing": self.missing}


def t_quantile(df: int) -> float:
    return T975[df - 1] if df <= len(T975) else 1.96


def mean_interval(values: Sequence[float | None]) -> Interval:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n, missing = len(finite), len(values) - len(finite)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0, missing)
    mean = sum(finite) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1, missing)
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (n - 1))
    half = t_quantile(n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, missing)
