"""`lmprobe mine RUN --by repr | repr-target | sharp | sharp-target`: discovered keys in the usual pair test.

`prepare(view, args, ...)` computes (or reads from RUN/analysis/discovery) the discovered keys,
prints what each cluster is, and returns a view whose keys include them, the grouping to mine
and a function that names the result's keys as the user asked. The miner itself is unchanged:

  * repr-target: groups (representation cluster, target); a pair shares the cluster (what the
    model sees alike) and differs in the target: the paper's "same feature, different label";
  * repr: groups = clusters; every two clusters form a candidate pair (the cluster plays the
    part of the target the miner's rule compares; the example's own target is kept as "class");
  * sharp-target: groups (mirror cluster along the sharp directions, target);
  * sharp: the two sides of each sharp axis (POLCA's mirror images): a pair shares the axis and
    differs in the side.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from lmprobe.discovery.names import DEFAULT_CLUSTERS, DEFAULT_DIRECTIONS, DISCOVERY_GROUPINGS, REPR_KEY, SHARP_KEY

if TYPE_CHECKING:
    from lmprobe.discovery.describe import ClusterInfo
    from lmprobe.discovery.repr_keys import DiscoveredKeys

CLASS_KEY = "class"
SIDE_KEY = "side"
SIDE_NAMES = {0: "+ side", 1: "- side"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from lmprobe.commands.common import non_negative, positive

    parser.add_argument("--checkpoint-step", type=non_negative, default=None, metavar="N",
                        help="--by repr/sharp: the checkpoint (step N of the run) whose model is read "
                             "(default: the checkpoint given, or the run's latest)")
    parser.add_argument("--clusters", type=positive, default=DEFAULT_CLUSTERS,
                        help="--by repr: number of representation clusters")
    parser.add_argument("--directions", type=positive, default=DEFAULT_DIRECTIONS,
                        help="--by sharp: top Hessian eigenvectors the examples' slopes are taken along")


def is_discovery(by: str | None) -> bool:
    return by in DISCOVERY_GROUPINGS


def discover(view, by: str, *, step: int | None = None, clusters: int = DEFAULT_CLUSTERS,
             directions: int = DEFAULT_DIRECTIONS, seed: int = 0, batch_size: int | None = None,
             progress: Callable[[str], None] | None = None) -> "DiscoveredKeys":
    """The discovered keys a grouping needs (cached in RUN/analysis/discovery)."""
    from lmprobe.discovery.repr_keys import DEFAULT_BATCH, representation_keys
    from lmprobe.discovery.sharp_keys import sharp_keys

    batch_size = batch_size or DEFAULT_BATCH
    if by.split("-")[0] == REPR_KEY:
        return representation_keys(view, step=step, n_clusters=clusters, seed=seed, batch_size=batch_size,
                                   progress=progress)
    return sharp_keys(view, step=step, k=directions, seed=seed, batch_size=batch_size, progress=progress)


class DiscoveryView:
    """A run view whose keys include the discovered ones (everything else is the view's own)."""

    def __init__(self, view, by: str, found: "DiscoveredKeys", infos: "list[ClusterInfo]"):
        self._view = view
        self.user_by = by
        self.found = found
        self.infos = {info.id: info for info in infos}
        base = dict(view.keys())
        kind = found.kind
        if by == f"{kind}-target":
            self._keys = {**base, kind: found.labels}
            self.by, self.names = by, None
        elif kind == REPR_KEY:  # clusters against each other: the cluster is what a pair differs in
            self._keys = {**{k: v for k, v in base.items() if k != "target"}, CLASS_KEY: base["target"],
                          "target": found.labels}
            self.by, self.names = "target", (REPR_KEY,)
        else:  # mirror images: a pair shares the axis and differs in the side
            self._keys = {**{k: v for k, v in base.items() if k not in ("target", SHARP_KEY)},
                          CLASS_KEY: base["target"], SHARP_KEY: found.extra["axis"], "target": found.extra["side"]}
            self.by, self.names = f"{SHARP_KEY}-target", (SHARP_KEY, SIDE_KEY)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._view, name)

    def keys(self) -> dict[str, np.ndarray]:
        return dict(self._keys)

    @property
    def groupings(self) -> tuple[str, ...]:
        """Only the discovered grouping: the view's own ones would read the renamed keys."""
        return (self.by,)

    def cluster_label(self, value: int) -> str:
        from lmprobe.discovery.describe import short_label

        if value < 0:
            return f"no {self.found.kind} cluster"
        return short_label(self.found.kind, self.infos.get(int(value)), int(value), self._view.key_label)

    def key_label(self, name: str, value: int) -> str:
        kind = self.found.kind
        if name == CLASS_KEY:
            return self._view.key_label("target", value)
        if self.names == (SHARP_KEY, SIDE_KEY):
            if name == SHARP_KEY:
                return f"sharp axis {value}" if value >= 0 else "no pull"
            if name in (SIDE_KEY, "target"):
                return SIDE_NAMES.get(int(value), f"side={value}")
        if name == kind or (name == "target" and self.names == (REPR_KEY,)):
            return self.cluster_label(value)
        return self._view.key_label(name, value)

    def relabel(self, result):
        """The mined result with the keys named as the user asked (repr, sharp + side)."""
        if self.names is not None:
            result.key_names = self.names
        result.by = self.user_by
        return result


def prepare(view, args: argparse.Namespace, console, *, progress=None) -> tuple[Any, Callable]:
    """(view to mine, relabel) for `lmprobe mine`; sets args.by to the grouping the miner runs.
    A --by that is not a discovery grouping passes through untouched."""
    by = args.by or view.groupings[0]
    if not is_discovery(by):
        return view, lambda result: result
    from rich.console import Console

    from lmprobe.discovery.describe import cluster_grid, clusters_table, describe_clusters

    found = discover(view, by, step=getattr(args, "checkpoint_step", None),
                     clusters=getattr(args, "clusters", DEFAULT_CLUSTERS),
                     directions=getattr(args, "directions", DEFAULT_DIRECTIONS), seed=args.seed, progress=progress)
    infos = describe_clusters(found.labels, view.keys(), found.typical)
    wrapped = DiscoveryView(view, by, found, infos)
    out = Console(stderr=True) if getattr(args, "json", False) else console
    where = f"step {found.step}" if found.step is not None else found.checkpoint.name
    how = (f"k-means on the model's features ({found.info.get('features_d')}-d, top {found.info.get('dims')} "
           f"principal axes keep {found.info.get('explained', 0):.0%})" if found.kind == REPR_KEY else
           f"slopes along the top {found.info.get('k')} Hessian eigenvectors ({found.info.get('source')}), "
           f"clustered up to sign into {found.info.get('n_axes')} axes; side 0 of an axis mirrors side 1")
    out.print(clusters_table(found.kind, f"{found.kind} clusters at {where}: {how}", infos, view.describe,
                             view.key_label, contexts=view.images([0]) is None))
    grid = cluster_grid(view, found.kind, infos, view.key_label,
                        Path(view.run_dir or view.checkpoint) / "figures" / f"clusters-{found.kind}-{where.replace(' ', '-')}.png")
    if grid is not None:
        out.print(f"wrote {grid}", highlight=False, soft_wrap=True)
    args.by = wrapped.by
    return wrapped, wrapped.relabel


def found_keys(view, by: str, **settings) -> "tuple[DiscoveryView, list[ClusterInfo]]":
    """For notebooks and tests: (view with the discovered keys, cluster descriptions)."""
    from lmprobe.discovery.describe import describe_clusters

    found = discover(view, by, **settings)
    infos = describe_clusters(found.labels, view.keys(), found.typical)
    return DiscoveryView(view, by, found, infos), infos


__all__ = ["DISCOVERY_GROUPINGS", "DiscoveryView", "add_arguments", "discover", "found_keys", "is_discovery",
           "prepare"]
