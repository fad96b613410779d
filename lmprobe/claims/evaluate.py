"""Per-seed numbers of each model -> one row per (claim, model): the interval over seeds and the
verdict of the claim's rule."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from lmprobe.claims.rules import CLAIMS, NOT_MEASURED, UNMEASURED, Claim
from lmprobe.claims.stats import Interval, mean_interval


@dataclass
class ClaimRow:
    claim: Claim
    model: str
    per_seed: list[float | None]
    interval: Interval
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim.name, "title": self.claim.title, "model": self.model,
                "statistic": self.claim.unit, "per_seed": self.per_seed, **self.interval.to_dict(),
                "rule": self.claim.rule, "verdict": self.verdict}


def evaluate(numbers: dict[str, Sequence[dict[str, Any]]], claims: Sequence[Claim] = CLAIMS) -> list[ClaimRow]:
    """`numbers`: model -> its seeds' measure_run dicts, in seed order."""
    rows = []
    for claim in claims:
        for model, seeds in numbers.items():
            per_seed = [None if s.get(claim.statistic) is None else float(s[claim.statistic]) for s in seeds]
            if claim.where_measured and all(v is None for v in per_seed):
                continue
            interval = mean_interval(per_seed)
            rows.append(ClaimRow(claim, model, per_seed, interval, claim.verdict(seeds, interval)))
    return rows


def unmeasured_rows() -> list[dict[str, str]]:
    return [{"title": title, "verdict": NOT_MEASURED, "why": why} for title, why in UNMEASURED]

