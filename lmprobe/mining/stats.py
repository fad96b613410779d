"""Detrending and the significance test behind every reported opposing pair.

Detrending — regression, not subtraction. Each series of per-interval changes c (a group's
mean loss change, or one example's) is regressed on the global mean change g (all kept
examples) with an intercept, and the residual is kept: c - a - b*g. Subtracting g alone would
leave (b - 1)*g in every residual; a group that learns faster than average (b > 1) and one that
learns slower (b < 1) would then look anti-correlated just because training is going on.

Standardising intervals. Per-example noise is far larger early in training than late, so the
test works on changes divided by each interval's cross-sectional spread s_i (the std over all
kept examples of their change around the mean change), fitted by weighted least squares.
Without it a handful of early intervals decide every correlation and independent groups pass
the test ~50 times too often (measured on synthetic traces with decaying noise).

Heavy tails. The standardised residuals are winsorised at 4 robust standard deviations
(1.4826 * MAD) before correlating, so a single interval cannot make a pair on its own; with
Student-t (df 2.5) random-walk noise this brings the null tail back to nominal, and it cost no
recall on planted pairs.

Test — Bartlett-corrected Fisher z with a Bonferroni bound. For residual series x, y over n
intervals, r = corr(x, y) (a partial correlation given g), z = atanh(r) * sqrt((n - 4) / v)
with v = 1 + 2 * sum_{k=1..K} acf_x(k) * acf_y(k) (Bartlett's variance of a correlation
between autocorrelated series; clipped to >= 1 so it only ever makes the test stricter).
The correction matters: losses recorded with independent noise give changes with lag-1
autocorrelation -0.5, which inflates the variance of r by 1.5x. A pair is significant when
z < -z_alpha with z_alpha = -Phi^-1(alpha / n_tests), one-sided (only anti-correlation is
sought) and Bonferroni-corrected over every candidate pair tested.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

PARTIAL_DOF = 4  # n - 3 for Fisher z, minus one for the regressed-out global change
WINSOR_LIMIT = 4.0  # robust standard deviations


def interval_scale(change_sq_sum: np.ndarray, trend: np.ndarray, n_examples: int) -> np.ndarray:
    """Cross-sectional std of the examples' changes around the mean change, per interval.

    Early in training every loss moves a lot; without this scale those few intervals would
    dominate every correlation (and make two independent groups look correlated far more
    often than the test allows). Floored so an interval where nothing moves gets no weight
    problem rather than a division by zero.
    """
    variance = np.asarray(change_sq_sum, dtype=np.float64) / max(1, n_examples) - np.asarray(trend) ** 2
    scale = np.sqrt(np.maximum(variance, 0.0))
    top = float(scale.max()) if scale.size else 0.0
    return np.maximum(scale, top * 1e-9) if top > 0 else np.ones_like(scale)


def regress_out(changes: np.ndarray, trend: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Residuals of each column of changes [intervals, series] after c ~ a + b * trend.

    With `scale` (per interval) the fit is weighted least squares and the residuals are
    returned in standardised units, (c - a - b * trend) / scale: noise of constant size across
    intervals, which is what the correlation test assumes. Closed form (two regressors), no
    LAPACK call.
    """
    changes = np.asarray(changes, dtype=np.float64)
    trend = np.asarray(trend, dtype=np.float64)
    weight = np.ones(trend.size) if scale is None else 1.0 / np.asarray(scale, dtype=np.float64) ** 2
    total = weight.sum()
    trend_c = trend - (weight @ trend) / total
    change_c = changes - np.einsum("i,ij->j", weight, changes)[None, :] / total
    spread = float(weight @ (trend_c * trend_c))
    slope = np.einsum("i,ij->j", weight * trend_c, change_c) / spread if spread > 0 else np.zeros(changes.shape[1])
    return (change_c - np.outer(trend_c, slope)) * np.sqrt(weight)[:, None]


def regress_out_each(changes: np.ndarray, trends: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """Like `regress_out`, but column j is regressed on its own trend column trends[:, j]."""
    changes = np.asarray(changes, dtype=np.float64)
    weight = np.ones(changes.shape[0]) if scale is None else 1.0 / np.asarray(scale, dtype=np.float64) ** 2
    total = weight.sum()
    trend_c = trends - (weight @ trends / total)[None, :]
    change_c = changes - (weight @ changes / total)[None, :]
    spread = weight @ (trend_c * trend_c)
    slope = np.divide(weight @ (trend_c * change_c), spread, out=np.zeros(changes.shape[1]), where=spread > 0)
    return (change_c - trend_c * slope[None, :]) * np.sqrt(weight)[:, None]


def trend_without(total_change: np.ndarray, n_total: int, changes: list[np.ndarray], sizes: list) -> np.ndarray:
    """Mean change of all examples outside the given groups: [intervals, pairs].

    total_change: [intervals] summed change of all kept examples; changes[k]: [intervals, pairs]
    mean changes of the groups to leave out, sizes[k]: [pairs] their sizes. Where nothing is
    left, the trend is 0 (only the intercept is removed).
    """
    rest = n_total - sum(np.asarray(s, dtype=np.float64) for s in sizes)
    summed = total_change[:, None] - sum(c * np.asarray(s, dtype=np.float64)[None, :] for c, s in zip(changes, sizes))
    return np.divide(summed, rest[None, :], out=np.zeros_like(summed), where=rest[None, :] > 0)


def pair_z(
    changes_a: np.ndarray,
    changes_b: np.ndarray,
    trends: np.ndarray,
    scale: np.ndarray,
    rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The test for pairs (columns): detrend each side on its pair's own trend, standardise,
    winsorise (optionally only over `rows`), correlate, Bartlett-Fisher z.

    Returns (corr, z, standardised_a, standardised_b), the latter two over all intervals.
    """
    std_a = regress_out_each(changes_a, trends, scale)
    std_b = regress_out_each(changes_b, trends, scale)
    part_a = std_a if rows is None else std_a[rows]
    part_b = std_b if rows is None else std_b[rows]
    wa, wb = winsorise(part_a), winsorise(part_b)
    wa, wb = wa - wa.mean(axis=0), wb - wb.mean(axis=0)
    unit_a, _ = unit_columns(wa)
    unit_b, _ = unit_columns(wb)
    corr = np.einsum("ij,ij->j", unit_a, unit_b)
    lags = max_lag(wa.shape[0])
    z = bartlett_z(corr, autocorrelations(wa, lags), autocorrelations(wb, lags), wa.shape[0])
    return corr, z, std_a, std_b


def _column_median(values: np.ndarray) -> np.ndarray:
    """Median of each column (np.median without its NaN checks: several times faster)."""
    rows = values.shape[0]
    if rows == 0:
        return np.zeros(values.shape[1])
    lower, upper = (rows - 1) // 2, rows // 2
    part = np.partition(np.ascontiguousarray(values.T), sorted({lower, upper}), axis=1)
    return 0.5 * (part[:, lower] + part[:, upper])


def winsorise(residuals: np.ndarray, limit: float = WINSOR_LIMIT) -> np.ndarray:
    """Clip each column at +-limit robust standard deviations (1.4826 * MAD; the std if MAD is 0).

    Per-example loss changes are heavy-tailed; one huge jump of a single member in each of two
    small groups at the same interval would otherwise make a correlation on its own.
    """
    centre = _column_median(residuals)
    spread = 1.4826 * _column_median(np.abs(residuals - centre))
    spread = np.where(spread > 0, spread, residuals.std(axis=0))
    bound = limit * spread
    return np.clip(residuals, centre - bound, centre + bound)


def unit_columns(residuals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Columns scaled to unit length (zero columns stay zero), and their std."""
    norms = np.sqrt(np.einsum("ij,ij->j", residuals, residuals))
    scaled = np.divide(residuals, norms, out=np.zeros_like(residuals), where=norms > 0)
    return scaled, norms / math.sqrt(max(1, residuals.shape[0]))


def max_lag(n_intervals: int) -> int:
    """How many autocorrelation lags enter Bartlett's sum: about n/5, at most 10."""
    return int(max(1, min(10, n_intervals // 5)))


def autocorrelations(residuals: np.ndarray, lags: int) -> np.ndarray:
    """acf(k), k = 1..lags, of each column of residuals [intervals, series] -> [series, lags]."""
    n, m = residuals.shape
    energy = np.einsum("ij,ij->j", residuals, residuals)
    acf = np.zeros((m, lags))
    for k in range(1, lags + 1):
        if k < n:
            lagged = np.einsum("ij,ij->j", residuals[k:], residuals[:-k])
            acf[:, k - 1] = np.divide(lagged, energy, out=np.zeros(m), where=energy > 0)
    return acf


def bartlett_z(corr: np.ndarray, acf_a: np.ndarray, acf_b: np.ndarray, n_intervals: int) -> np.ndarray:
    """Fisher z of correlations, scaled by Bartlett's variance factor (see module docstring).

    corr: any shape S; acf_a, acf_b: S + [lags], the two series' autocorrelations.
    """
    variance = np.maximum(1.0, 1.0 + 2.0 * np.sum(acf_a * acf_b, axis=-1))
    dof = max(1, n_intervals - PARTIAL_DOF)
    r = np.clip(corr, -0.999999, 0.999999)
    return np.arctanh(r) * np.sqrt(dof / variance)


def bonferroni_threshold(alpha: float, n_tests: int) -> float:
    """The z a one-sided test must fall below: Phi^-1(alpha / n_tests), as a positive number."""
    return -NormalDist().inv_cdf(alpha / max(1, n_tests))


def swing_intervals(a: np.ndarray, b: np.ndarray, z: float) -> np.ndarray:
    """Intervals where both residual series move by more than z of their std, in opposite ways."""
    sa, sb = a.std(), b.std()
    if sa == 0 or sb == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero((np.abs(a) >= z * sa) & (np.abs(b) >= z * sb) & (a * b < 0))
