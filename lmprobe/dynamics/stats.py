"""`example_statistics`: a loss trace in, per-example training-dynamics statistics out.

The definitions are in the package docstring (lmprobe.dynamics); `DEFINITIONS` has one line
per output column for tables, parquet metadata and --help text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lmprobe.dynamics.blocks import DEFAULT_CHUNK_CELLS
from lmprobe.dynamics.scan import ScanSettings, scan
from lmprobe.errors import LmprobeError

RHO1_CLASSES = ("H->H", "L->H", "H->L", "L->L")  # code = (start low) + 2 * (end low)
DEFAULT_SMOOTH = 5

DEFINITIONS: dict[str, str] = {
    "example": "index of the example (column of the trace)",
    "confidence": "mean over records of p = exp(-loss), the probability of the true target"
                  " (Dataset Cartography, Swayamdipta et al. 2020)",
    "variability": "std over records of p = exp(-loss), ddof 0 (Dataset Cartography)",
    "learned_share": "share of records with loss <= learned_threshold (default ln 2, i.e. p >= 0.5,"
                     " which guarantees the target is the argmax)",
    "forgetting_events": "transitions learned -> not learned between consecutive records"
                         " (Toneva et al. 2019); 0 when never learned",
    "never_learned": "learned at no record of the window (Toneva et al. rank these as the most"
                     " forgettable)",
    "unforgettable": "learned at some record and never forgotten afterwards",
    "first_learned_step": "step of the first learned record; -1 when never learned",
    "aoa_step": "age of acquisition: first step where the loss, smoothed by a centred moving average,"
                " reaches the midpoint of start_loss and end_loss, interpolated in log(1 + step)"
                " (after Chang, Tu & Bergen 2024); NaN unless start_loss - end_loss exceeds"
                " aoa_min_drop (default: twice the example's late_loss_std)",
    "start_loss": "mean loss over the first edge records of the window",
    "end_loss": "mean loss over the last edge records of the window",
    "rho1_class": "H->H, L->H, H->L or L->L: start_loss and end_loss above (H) or at/below (L)"
                  " their thresholds (Rho-1, Lin et al. 2024); default thresholds are the medians",
    "final_loss": "loss at the last record of the window",
    "min_loss": "minimum loss over the window",
    "mean_loss": "mean loss over the window",
    "loss_std": "std of the loss over the whole window, ddof 0",
    "late_loss_std": "within-run variability: std of the loss over the last quarter of the"
                     " window's records (at least 2), ddof 0",
    "finite": "False when the example has a non-finite loss in the window (its statistics are NaN)",
}


@dataclass
class ExampleStats:
    """Per-example statistics of one trace window; every array has one value per example."""

    steps: np.ndarray  # int64 [records]: steps of the window's records
    learned_threshold: float
    rho1_thresholds: tuple[float, float]  # (start, end) loss thresholds
    edge_records: int
    smooth_records: int
    late_records: int
    confidence: np.ndarray
    variability: np.ndarray
    learned_share: np.ndarray
    forgetting_events: np.ndarray  # int64
    never_learned: np.ndarray  # bool
    unforgettable: np.ndarray  # bool
    first_learned_step: np.ndarray  # int64, -1 = never
    aoa_step: np.ndarray  # float64, NaN = no drop / never reached
    start_loss: np.ndarray
    end_loss: np.ndarray
    rho1_code: np.ndarray  # int8 index into RHO1_CLASSES, -1 for non-finite examples
    final_loss: np.ndarray
    min_loss: np.ndarray
    mean_loss: np.ndarray
    loss_std: np.ndarray
    late_loss_std: np.ndarray
    finite: np.ndarray  # bool
    warnings: list[str] = field(default_factory=list)

    @property
    def n_examples(self) -> int:
        return len(self.finite)

    @property
    def n_records(self) -> int:
        return len(self.steps)

    @property
    def window(self) -> tuple[int, int]:
        return int(self.steps[0]), int(self.steps[-1])

    @property
    def n_finite(self) -> int:
        return int(np.count_nonzero(self.finite))

    @property
    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.rho1_code[self.finite].astype(np.int64), minlength=4)
        return {name: int(c) for name, c in zip(RHO1_CLASSES, counts)}

    @property
    def class_shares(self) -> dict[str, float]:
        total = max(1, self.n_finite)
        return {name: count / total for name, count in self.class_counts.items()}

    def rho1_labels(self) -> np.ndarray:
        """Class names as an object array, None for non-finite examples."""
        names = np.array(list(RHO1_CLASSES) + [None], dtype=object)
        return names[np.where(self.rho1_code < 0, 4, self.rho1_code)]

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-example column in table order (rho1_class as its int8 code)."""
        return {
            "example": np.arange(self.n_examples, dtype=np.int64),
            "confidence": self.confidence, "variability": self.variability,
            "learned_share": self.learned_share, "forgetting_events": self.forgetting_events,
            "never_learned": self.never_learned, "unforgettable": self.unforgettable,
            "first_learned_step": self.first_learned_step, "aoa_step": self.aoa_step,
            "start_loss": self.start_loss, "end_loss": self.end_loss,
            "rho1_class": self.rho1_code, "final_loss": self.final_loss,
            "min_loss": self.min_loss, "mean_loss": self.mean_loss, "loss_std": self.loss_std,
            "late_loss_std": self.late_loss_std, "finite": self.finite,
        }

    def parameters(self) -> dict[str, Any]:
        return {
            "window": list(self.window), "n_records": self.n_records, "n_examples": self.n_examples,
            "learned_threshold": self.learned_threshold,
            "rho1_thresholds": {"start": self.rho1_thresholds[0], "end": self.rho1_thresholds[1]},
            "edge_records": self.edge_records, "smooth_records": self.smooth_records,
            "late_records": self.late_records,
        }

    def summary(self) -> dict[str, Any]:
        """Shares and averages over the finite examples."""
        f = self.finite
        n = max(1, self.n_finite)
        aoa = self.aoa_step[f]
        forgets = self.forgetting_events[f]
        return {
            "n_finite": self.n_finite,
            "never_learned": float(np.count_nonzero(self.never_learned[f]) / n),
            "unforgettable": float(np.count_nonzero(self.unforgettable[f]) / n),
            "forgotten_at_least_once": float(np.count_nonzero(forgets > 0) / n),
            "mean_forgetting_events": float(forgets.mean()) if forgets.size else math.nan,
            "learned_at_end": float(np.count_nonzero(self.final_loss[f] <= self.learned_threshold) / n),
            "with_aoa": float(np.count_nonzero(np.isfinite(aoa)) / n),
            "median_aoa_step": float(np.median(aoa[np.isfinite(aoa)])) if np.isfinite(aoa).any() else math.nan,
            "mean_confidence": float(self.confidence[f].mean()) if f.any() else math.nan,
            "mean_final_loss": float(self.final_loss[f].mean()) if f.any() else math.nan,
            "class_shares": self.class_shares,
        }


def _select_records(losses: Any, steps: Any, window) -> tuple[Any, int, int, np.ndarray]:
    from lmprobe.mining.inputs import select_window

    chosen = select_window(losses, steps, window, needs="per-example statistics need")
    if chosen.steps[0] < 0:
        raise LmprobeError(f"trace steps must be >= 0, got {chosen.steps[0]}")
    return chosen.losses, chosen.row_start, chosen.row_stop, chosen.steps.copy()


def default_edge(n_records: int) -> int:
    return min(5, max(1, n_records // 10))


def example_statistics(
    losses: Any,
    steps: Any,
    *,
    window: tuple[int | None, int | None] | None = None,
    learned_threshold: float = math.log(2),
    rho1_threshold: float | None = None,
    edge_records: int | None = None,
    smooth: int = DEFAULT_SMOOTH,
    aoa_min_drop: float | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
) -> ExampleStats:
    """Per-example statistics of the records with window[0] <= step <= window[1].

    `losses` is [records x examples] (numpy array or np.memmap, any float dtype); it is read in
    blocks of at most `chunk_cells` values. `smooth` is the (odd) width in records of the
    moving average used for the age of acquisition; `edge_records` the records averaged for
    start_loss / end_loss (default min(5, max(1, records // 10))). An age of acquisition is
    reported only where start_loss - end_loss exceeds `aoa_min_drop` (a loss; default None:
    twice the example's own late_loss_std, so a flat noisy curve gets none).
    """
    losses, row_start, row_stop, window_steps = _select_records(losses, steps, window)
    n_records = row_stop - row_start
    edge = default_edge(n_records) if edge_records is None else int(edge_records)
    problems = []
    if not math.isfinite(learned_threshold):
        problems.append(f"learned_threshold={learned_threshold} (needs a finite loss, e.g. ln 2)")
    if rho1_threshold is not None and not math.isfinite(rho1_threshold):
        problems.append(f"rho1_threshold={rho1_threshold} (needs a finite loss or None for medians)")
    if not 1 <= edge <= n_records:
        problems.append(f"edge_records={edge} (needs 1..{n_records}, the records in the window)")
    if smooth < 1 or smooth % 2 == 0:
        problems.append(f"smooth={smooth} (needs an odd number of records >= 1)")
    if aoa_min_drop is not None and not aoa_min_drop >= 0:
        problems.append(f"aoa_min_drop={aoa_min_drop} (needs a loss >= 0, or None for 2 x late_loss_std)")
    if chunk_cells < 1:
        problems.append(f"chunk_cells={chunk_cells} (needs >= 1)")
    if problems:
        raise LmprobeError("bad per-example statistics setting: " + "; ".join(problems))

    late = min(n_records, max(2, math.ceil(n_records / 4)))
    settings = ScanSettings(float(learned_threshold), edge, int(smooth), late)
    log_steps = np.log1p(window_steps.astype(np.float64))
    sums = scan(losses, row_start, row_stop, log_steps, settings, int(chunk_cells))
    return _finish(sums, window_steps, settings, rho1_threshold, aoa_min_drop)


def _std(sq: np.ndarray, total: np.ndarray, n: int) -> np.ndarray:
    mean = total / n
    with np.errstate(invalid="ignore"):  # non-finite examples: NaN, blanked afterwards
        return np.sqrt(np.maximum(sq / n - mean * mean, 0.0))


def _finish(sums, steps: np.ndarray, settings: ScanSettings, rho1_threshold: float | None,
            aoa_min_drop: float | None) -> ExampleStats:
    n_records = len(steps)
    finite = np.isfinite(sums.x_sum) & np.isfinite(sums.x_sq)
    n_bad = int(finite.size - np.count_nonzero(finite))
    if n_bad == finite.size:
        raise LmprobeError(f"every one of the {n_bad} examples has a NaN or infinite loss in the window;"
                           " check the trace (a diverged run?) or choose an earlier window")
    warnings = []
    if n_bad:
        warnings.append(f"{n_bad} of {finite.size} examples have a NaN or infinite loss in the window;"
                        " their statistics are NaN and they are left out of shares and tables")

    learned = sums.learned
    never = learned == 0
    forgets = sums.forgets
    if rho1_threshold is None:
        thresholds = (float(np.median(sums.start[finite])), float(np.median(sums.end[finite])))
    else:
        thresholds = (float(rho1_threshold), float(rho1_threshold))
    code = ((sums.start <= thresholds[0]).astype(np.int8)
            + 2 * (sums.end <= thresholds[1]).astype(np.int8))
    late_std = _std(sums.late_sq, sums.late_sum, settings.late_records)
    min_drop = 2 * late_std if aoa_min_drop is None else aoa_min_drop
    aoa = np.where(sums.start - sums.end > min_drop, np.expm1(sums.aoa_log), np.nan)
    first_step = np.where(sums.first_learned >= 0, steps[np.maximum(sums.first_learned, 0)], -1)

    stats = ExampleStats(
        steps=steps,
        learned_threshold=settings.learned_threshold,
        rho1_thresholds=thresholds,
        edge_records=settings.edge,
        smooth_records=settings.smooth,
        late_records=settings.late_records,
        confidence=sums.p_shift + sums.p_sum / n_records,
        variability=_std(sums.p_sq, sums.p_sum, n_records),
        learned_share=learned / n_records,
        forgetting_events=forgets,
        never_learned=never,
        unforgettable=~never & (forgets == 0),
        first_learned_step=first_step.astype(np.int64),
        aoa_step=aoa,
        start_loss=sums.start,
        end_loss=sums.end,
        rho1_code=code,
        final_loss=sums.final,
        min_loss=sums.min,
        mean_loss=sums.x_shift + sums.x_sum / n_records,
        loss_std=_std(sums.x_sq, sums.x_sum, n_records),
        late_loss_std=late_std,
        finite=finite,
        warnings=warnings,
    )
    if n_bad:
        _blank(stats, ~finite)
    return stats


def _blank(stats: ExampleStats, bad: np.ndarray) -> None:
    """The defined result for examples with a non-finite loss: NaN, 0 counts, no class."""
    for name in ("confidence", "variability", "learned_share", "aoa_step", "start_loss", "end_loss",
                 "final_loss", "min_loss", "mean_loss", "loss_std", "late_loss_std"):
        getattr(stats, name)[bad] = np.nan
    stats.forgetting_events[bad] = 0
    stats.never_learned[bad] = False
    stats.unforgettable[bad] = False
    stats.first_learned_step[bad] = -1
    stats.rho1_code[bad] = -1
