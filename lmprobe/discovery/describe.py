"""What a discovered cluster is: the key values enriched in it (Fisher p), its typical members,
shown as a table with contexts (text) or an image grid (vision)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from lmprobe.mining.clusters import Enrichment, describe_cluster, enrichment_tests

MIN_COUNT = 3
SHOWN = 3  # enrichments listed per cluster
EXAMPLES = 8


@dataclass
class ClusterInfo:
    id: int
    size: int
    enriched: list[tuple[str, Enrichment]] = field(default_factory=list)  # across keys, most significant first
    examples: list[int] = field(default_factory=list)

    def to_dict(self, key_label: Callable[[str, int], str]) -> dict[str, Any]:
        return {"id": self.id, "size": self.size, "examples": self.examples,
                "enriched": [dict(e.to_dict(), key=name, label=named(name, e.value, key_label))
                             for name, e in self.enriched]}


def describe_clusters(labels: np.ndarray, keys: Mapping[str, np.ndarray], typical: Callable[[int, int], np.ndarray],
                      *, min_count: int = MIN_COUNT) -> list[ClusterInfo]:
    """Each cluster (label >= 0) with its significantly enriched key values (hypergeometric p,
    Bonferroni over every (cluster, key, value) tested; lmprobe.mining.clusters)."""
    labels = np.asarray(labels)
    ids = [int(c) for c in np.unique(labels[labels >= 0])]
    clusters = [np.flatnonzero(labels == c) for c in ids]
    keep = np.ones(len(labels), dtype=bool)
    tested = enrichment_tests(clusters, {k: np.asarray(v) for k, v in keys.items()}, keep, min_count)
    out = []
    for c, members, per_key in zip(ids, clusters, tested):
        enriched, _ = describe_cluster(per_key, members.size)
        flat = sorted(((name, e) for name, entries in enriched.items() for e in entries),
                      key=lambda item: (item[1].p_value, -item[1].share, item[0], item[1].value))
        out.append(ClusterInfo(c, int(members.size), flat[:SHOWN],
                               [int(i) for i in typical(c, EXAMPLES)]))
    return out


def named(name: str, value: int, key_label: Callable[[str, int], str]) -> str:
    """A key value with its key's name unless the label already says it: "feature=␣of", "top=blue", "[␣the]"."""
    label = key_label(name, value)
    return label if name == "target" or "=" in label else f"{name}={label}"


def short_label(kind: str, info: ClusterInfo | None, cluster: int, key_label: Callable[[str, int], str]) -> str:
    """"repr 3 (airplane 84%)": the cluster and its most significant enrichment."""
    if info is None or not info.enriched:
        return f"{kind} {cluster}"
    name, e = info.enriched[0]
    return f"{kind} {cluster} ({named(name, e.value, key_label)} {e.share:.0%})"


def clusters_table(kind: str, title: str, infos: list[ClusterInfo], describe, key_label, *, contexts: bool):
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, show_lines=True)
    table.add_column("cluster", justify="right")
    table.add_column("n", justify="right")
    table.add_column("enriched in (share of cluster, enrichment, Bonferroni p)")
    table.add_column("typical members")
    for info in infos:
        enriched = "\n".join(f"{named(name, e.value, key_label)}: {e.share:.0%}, x{e.enrichment:.1f}, p {e.p_adjusted:.1e}"
                             for name, e in info.enriched) or "nothing significant"
        shown = Text()
        for i in info.examples[: 3 if contexts else EXAMPLES]:
            context, target = describe(i)
            if shown:
                shown.append("\n" if contexts else ", ")
            shown.append(f"{context[-40:]} [{target}]" if contexts else f"{context} [{target}]")
        table.add_row(f"{kind} {info.id}", str(info.size), enriched, shown)
    return table


def cluster_grid(view, kind: str, infos: list[ClusterInfo], key_label, path: Path) -> Path | None:
    """One row of typical thumbnails per cluster (domains with images), or None."""
    if not infos or view.images([0]) is None:
        return None
    from lmprobe.report.figures import example_grid

    rows = []
    for info in infos:
        members = info.examples
        rows.append((short_label(kind, info, info.id, key_label) + f"\nn={info.size}", view.images(members),
                     [view.describe(i)[1] for i in members]))
    return example_grid(rows, path)
