"""Examples grouped by a tuple of key values, e.g. (feature, target) = (":", "\\n").

A group is identified by its key values in the order of the `by` spec. Groups smaller than
`min_size` are dropped: their mean loss is too noisy to say anything about, and the pair
search would pay for them in its multiple-testing correction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


@dataclass
class Group:
    """One group: its key values, members, and mean loss at each record of the window."""

    key: tuple[int, ...]
    size: int
    members: np.ndarray  # int64 example indices, ascending
    mean_loss: np.ndarray  # float64 [records]
    examples: np.ndarray  # a few members that move most (for display), best first

    def to_dict(self, key_names: tuple[str, ...]) -> dict[str, Any]:
        return {
            "key": {name: int(v) for name, v in zip(key_names, self.key)},
            "size": int(self.size),
            "members": [int(i) for i in self.members],
            "mean_loss": [float(v) for v in self.mean_loss],
            "examples": [int(i) for i in self.examples],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key_names: tuple[str, ...]) -> "Group":
        return cls(
            key=tuple(int(data["key"][name]) for name in key_names),
            size=int(data["size"]),
            members=np.asarray(data["members"], dtype=np.int64),
            mean_loss=np.asarray(data["mean_loss"], dtype=np.float64),
            examples=np.asarray(data["examples"], dtype=np.int64),
        )


@dataclass
class GroupIndex:
    """Which group each example belongs to (-1: none), for groups of at least min_size."""

    key_names: tuple[str, ...]
    keys: np.ndarray  # int64 [groups, len(key_names)]
    sizes: np.ndarray  # int64 [groups]
    group_of: np.ndarray  # int64 [examples], -1 for examples in no kept group

    @property
    def n_groups(self) -> int:
        return int(self.sizes.size)

    def members(self) -> list[np.ndarray]:
        """Member indices of every group, ascending, in one sort."""
        grouped = np.flatnonzero(self.group_of >= 0)
        order = grouped[np.argsort(self.group_of[grouped], kind="stable")]
        bounds = np.cumsum(self.sizes)[:-1]
        return np.split(order, bounds) if self.n_groups else []


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniques, codes = np.unique(values, return_inverse=True)
    return uniques, codes.reshape(-1)


def group_examples(
    keys: Mapping[str, np.ndarray],
    key_names: tuple[str, ...],
    *,
    min_size: int,
    include: np.ndarray | None = None,
    max_groups: int | None = None,
) -> GroupIndex:
    """Group the included examples by the values of `key_names`.

    Groups are ordered by size (largest first), then by key; `max_groups` keeps only the
    largest ones (bounding the memory of the per-record group sums).
    """
    n = next(iter(keys.values())).shape[0]
    include = np.ones(n, dtype=bool) if include is None else include
    candidates = np.flatnonzero(include)
    if candidates.size == 0:
        return GroupIndex(key_names, np.zeros((0, len(key_names)), np.int64),
                          np.zeros(0, np.int64), np.full(n, -1, np.int64))
    # One dense code per distinct key tuple, re-densified after each key so it never overflows.
    combined = np.zeros(candidates.size, dtype=np.int64)
    for name in key_names:
        uniques, codes = _codes(keys[name][candidates])
        _, combined = _codes(combined * uniques.size + codes)
    _, first, inverse, counts = np.unique(
        combined, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    kept = np.flatnonzero(counts >= min_size)
    representative = candidates[first[kept]]
    key_values = np.stack([keys[name][representative] for name in key_names], axis=1)
    sizes = counts[kept].astype(np.int64)
    order = np.lexsort(tuple(key_values[:, p] for p in range(len(key_names) - 1, -1, -1)) + (-sizes,))
    if max_groups is not None:
        order = order[:max_groups]
    new_id = np.full(counts.size, -1, dtype=np.int64)
    new_id[kept[order]] = np.arange(order.size)
    group_of = np.full(n, -1, dtype=np.int64)
    group_of[candidates] = new_id[inverse]
    return GroupIndex(key_names, key_values[order], sizes[order], group_of)
