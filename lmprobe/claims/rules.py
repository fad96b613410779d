"""The claims and their verdict rules, fixed in code before the runs they judge. Each rule reads
the per-seed numbers of one model (measure.py) and says holds / partly / does not hold / not
measured; `lmprobe claims --help` prints RULES."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from lmprobe.claims.stats import Interval, mean_interval

HOLDS, PARTLY, FAILS, NOT_MEASURED = "holds", "partly", "does not hold", "not measured"
Seeds = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Claim:
    name: str
    title: str  # the paper's claim, in a few words
    statistic: str  # key of the per-run number summarised over seeds
    unit: str  # what the number is
    rule: str  # the verdict rule, in words (the function below implements exactly this)
    verdict: Callable[[Seeds, Interval], str]
    where_measured: bool = False  # a row only for models where some seed has the statistic (e.g. SGD runs)


def values(seeds: Seeds, key: str) -> list[float]:
    return [float(s[key]) for s in seeds if s.get(key) is not None and math.isfinite(float(s[key]))]


def sharpness_verdict(seeds: Seeds, summary: Interval) -> str:
    if not any(s.get("sharpness_logged") for s in seeds):
        return NOT_MEASURED
    crossed = [bool(s.get("crossed")) for s in seeds]
    if not any(crossed):
        return FAILS
    if all(crossed) and 0.8 <= summary.mean <= 1.25:
        return HOLDS
    return PARTLY


def follow_verdict(seeds: Seeds, summary: Interval) -> str:
    if not values(seeds, "share_aligned"):
        return NOT_MEASURED
    p = values(seeds, "p_follow")
    significant = bool(p) and statistics.median(p) < 0.05
    if summary.mean >= 0.5 and significant:
        return HOLDS
    return PARTLY if summary.mean >= 0.5 or significant else FAILS


def pairs_verdict(seeds: Seeds, summary: Interval) -> str:
    found = [s.get("n_pairs", 0) > 0 for s in seeds]
    if all(found) and summary.mean <= -0.3:
        return HOLDS
    return PARTLY if any(found) else FAILS


def share_verdict(at_least: float, partly_above: float) -> Callable[[Seeds, Interval], str]:
    def verdict(seeds: Seeds, summary: Interval) -> str:
        if summary.n == 0:
            return NOT_MEASURED
        return HOLDS if summary.mean >= at_least else PARTLY if summary.mean > partly_above else FAILS
    return verdict


def half_verdict(seeds: Seeds, summary: Interval) -> str:
    if summary.n == 0:
        return NOT_MEASURED
    if 0.3 <= summary.mean <= 0.6:
        return HOLDS
    return PARTLY if 0.2 <= summary.mean <= 0.7 else FAILS


def complexity_verdict(seeds: Seeds, summary: Interval) -> str:
    if summary.n == 0:
        return NOT_MEASURED
    p = values(seeds, "complexity_p")
    if summary.mean > 0 and p and statistics.median(p) < 0.05:
        return HOLDS
    return PARTLY if summary.mean > 0 else FAILS


def depth_verdict(seeds: Seeds, summary: Interval) -> str:
    if summary.n == 0:
        return NOT_MEASURED
    return HOLDS if summary.mean <= 1 / 3 else PARTLY if summary.mean <= 0.5 else FAILS


def dominate_verdict(seeds: Seeds, summary: Interval) -> str:
    if summary.n == 0:
        return NOT_MEASURED
    if summary.mean >= 0.5:
        return HOLDS
    examples = values(seeds, "sgd_example_share")
    return PARTLY if examples and summary.mean > 2 * statistics.mean(examples) else FAILS


CLAIMS = (
    Claim("sharpness", "sharpness rises to 2/lr and hovers there", "median_ratio_after_crossing",
          "median sharpness / threshold from the first crossing on (mini-batch SGD: the batch sharpness)",
          "holds: every seed reaches the threshold and the mean median ratio is in [0.8, 1.25]; partly: "
          "some seed reaches it; does not hold: none does", sharpness_verdict),
    Claim("follow", "loss spikes follow the instabilities of the edge of stability", "share_aligned",
          "share of training-loss spikes within the window after a sharpness crest (lmprobe events)",
          "holds: mean share >= 0.5 and the median over seeds of the circular-shift p < 0.05; partly: one of "
          "the two; not measured: no spike in any seed", follow_verdict),
    Claim("pairs", "opposing pairs exist and swing out of phase", "top_pair_corr",
          "correlation of the top opposing pair's detrended loss changes (lmprobe mine)",
          "holds: every seed has a significant pair and the mean correlation <= -0.3; partly: some seed "
          "has one", pairs_verdict),
    Claim("sides", "the two sides of the top eigenvector move apart at instabilities", "sides_apart_share",
          "share of instabilities where the examples along +v and -v move in opposite directions, "
          "interval excluding 0",
          "holds: mean share >= 0.5; partly: > 0; not measured: no instability with the alignment recorded",
          share_verdict(0.5, 0.0)),
    Claim("half", "almost half of the examples get worse at every step", "frac_rose_median",
          "median over intervals of the share of probe examples whose loss rose",
          "holds: mean in [0.3, 0.6]; partly: in [0.2, 0.7]", half_verdict),
    Claim("top1", "a few outliers carry a loss spike", "top1_share_at_spikes",
          "median share of a spike interval's loss rise carried by the top 1% of examples",
          "holds: mean share >= 0.1 (10x their number); partly: > 0.05; "
          "not measured: no spike", share_verdict(0.1, 0.05)),
    Claim("complexity", "outlier groups grow in complexity over training", "complexity_tau",
          "Kendall tau of the complexity index over windows (lmprobe mine)",
          "holds: mean tau > 0 and the median p < 0.05; partly: mean tau > 0; does not hold: tau <= 0",
          complexity_verdict),
    Claim("blocks", "sharpness concentrates in the embeddings / early layers", "sharpest_block_depth",
          "relative depth (0: first block, 1: last) of the block whose restricted Hessian has the largest "
          "top eigenvalue, at the last checkpoint",
          "holds: mean depth <= 1/3; partly: <= 1/2; does not hold: deeper", depth_verdict),
    Claim("sgd", "outliers dominate SGD dynamics", "sgd_variance_share",
          "share of the variance of the probe's mean loss change carried by the top 3 opposing pairs' "
          "groups (mini-batch SGD runs only)",
          "holds: mean share >= 0.5; partly: above twice those groups' share of the examples; "
          "does not hold: otherwise", dominate_verdict, where_measured=True),
)

# Claims of the paper this command does not measure yet, with the reason (shown as "not measured").
UNMEASURED: tuple[tuple[str, str], ...] = ()


def rules_text() -> str:
    lines = [f"  {c.name}: {c.title}. Statistic: {c.unit}. Rule: {c.rule}." for c in CLAIMS]
    lines += [f"  (not measured) {title}: {why}." for title, why in UNMEASURED]
    return "\n".join(lines)
