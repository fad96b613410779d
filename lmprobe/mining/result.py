"""MiningResult: everything `mine` finds, as plain arrays and dataclasses, JSON-ready."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lmprobe.mining.clusters import Clusters
from lmprobe.mining.groups import Group
from lmprobe.mining.histogram import Histogram
from lmprobe.mining.movers import Movers
from lmprobe.mining.opposing import OpposingPair, PairTest
from lmprobe.mining.transient import WindowChoice
from lmprobe.mining.windows import Complexity


@dataclass
class MiningResult:
    """What `mine` found in one window of a loss trace.

    steps: the recorded steps in the window; global_mean_loss: mean loss of all kept examples
    per record. groups: keyed groups of at least min_size, largest first. pairs: significant
    opposing pairs, best score first (`pair_test` says how they were tested). clusters: the
    key-free clustering of the top movers (None when switched off). skipped: examples left out
    because their loss was not finite somewhere in the window. mode: "groups" (pairs of keyed
    groups, plus clusters unless switched off) or "cluster" (clusters only; `groups` and
    `pairs` empty). window_choice: which window was mined and why (None in old results).
    """

    by: str
    key_names: tuple[str, ...]
    steps: np.ndarray
    n_examples: int
    skipped: np.ndarray
    global_mean_loss: np.ndarray
    movers: Movers
    histogram: Histogram
    groups: list[Group]
    pairs: list[OpposingPair]
    pair_test: PairTest
    clusters: Clusters | None
    settings: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    mode: str = "groups"
    window_choice: WindowChoice | None = None
    complexity: Complexity | None = None  # which grouping explains the strongest pairs over time

    @property
    def n_skipped(self) -> int:
        return int(self.skipped.size)

    @property
    def window(self) -> tuple[int, int]:
        return int(self.steps[0]), int(self.steps[-1])

    def to_dict(self) -> dict[str, Any]:
        """Plain Python types only: `json.dumps(result.to_dict())` always works."""
        return {
            "mode": self.mode,
            "by": self.by,
            "window_choice": None if self.window_choice is None else self.window_choice.to_dict(),
            "key_names": list(self.key_names),
            "window": list(self.window),
            "steps": [int(s) for s in self.steps],
            "n_examples": int(self.n_examples),
            "n_skipped": self.n_skipped,
            "skipped": [int(i) for i in self.skipped],
            "global_mean_loss": [float(v) for v in self.global_mean_loss],
            "movers": self.movers.to_dict(),
            "histogram": self.histogram.to_dict(),
            "groups": [g.to_dict(self.key_names) for g in self.groups],
            "pairs": [p.to_dict(self.key_names) for p in self.pairs],
            "pair_test": self.pair_test.to_dict(),
            "clusters": None if self.clusters is None else self.clusters.to_dict(),
            "complexity": None if self.complexity is None else self.complexity.to_dict(),
            "settings": dict(self.settings),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "MiningResult":
        """Rebuild a result from `to_dict()` output (e.g. a saved mining.json)."""
        names = tuple(data["key_names"])
        return cls(
            by=str(data["by"]),
            key_names=names,
            steps=np.asarray(data["steps"], dtype=np.int64),
            n_examples=int(data["n_examples"]),
            skipped=np.asarray(data["skipped"], dtype=np.int64),
            global_mean_loss=np.asarray(data["global_mean_loss"], dtype=np.float64),
            movers=Movers.from_dict(data["movers"]),
            histogram=Histogram.from_dict(data["histogram"]),
            groups=[Group.from_dict(g, names) for g in data["groups"]],
            pairs=[OpposingPair.from_dict(p, names) for p in data["pairs"]],
            pair_test=PairTest.from_dict(data["pair_test"]),
            clusters=None if data["clusters"] is None else Clusters.from_dict(data["clusters"]),
            settings=dict(data.get("settings", {})),
            warnings=list(data.get("warnings", [])),
            mode=str(data.get("mode", "groups")),
            window_choice=None if data.get("window_choice") is None
            else WindowChoice.from_dict(data["window_choice"]),
            complexity=None if data.get("complexity") is None else Complexity.from_dict(data["complexity"]),
        )
