"""Synthetic loss traces with planted opposing groups and clusters, for tests and benchmarks.

The background imitates a training run: every example's loss decays towards its own floor
at its own rate (so groups differ in how fast they learn), with per-example measurement noise
of varying size plus a small random walk. Keys imitate text: a Zipf-like feature (last
context token) and, per feature, a Zipf-like target (next token), so a few (feature, target)
groups are large and most are tiny.

Planted on top:
* opposing pairs — for a feature, its two largest target groups get a shared sparse,
  mean-reverting swing process o(t): members of one add +w*o(t), of the other -k*w*o(t);
* clusters — all examples of a chosen feature (whatever their target) share a swing
  process; consecutive clusters can be made anti-phased.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PlantedTrace:
    losses: np.ndarray  # float32 [records, examples]
    steps: np.ndarray  # int64 [records]
    keys: dict[str, np.ndarray]
    pairs: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)
    cluster_features: list[int] = field(default_factory=list)


def zipf_choice(rng: np.random.Generator, n_values: int, size: int, exponent: float) -> np.ndarray:
    weights = 1.0 / np.arange(1, n_values + 1) ** exponent
    return rng.choice(n_values, size=size, p=weights / weights.sum())


def swing_process(rng: np.random.Generator, n_records: int, scale: float,
                  rate: float = 0.3, persistence: float = 0.5) -> np.ndarray:
    """Sparse shocks, decaying back: loss spikes that come and go, [records]."""
    shocks = rng.normal(0.0, scale, n_records) * (rng.random(n_records) < rate)
    process = np.zeros(n_records)
    for t in range(1, n_records):
        process[t] = persistence * process[t - 1] + shocks[t]
    return process


def planted_trace(
    n_records: int = 60,
    n_examples: int = 5000,
    *,
    n_pairs: int = 6,
    n_cluster_features: int = 0,
    n_features: int = 40,
    n_targets: int = 150,
    pair_scale: float = 0.12,
    cluster_scale: float = 0.25,
    noise: float = 0.05,
    min_pair_size: int = 10,
    seed: int = 0,
) -> PlantedTrace:
    """A trace [n_records x n_examples] with `n_pairs` opposing pairs and some feature clusters."""
    rng = np.random.default_rng(seed)
    feature = zipf_choice(rng, n_features, n_examples, 0.8)
    # Each feature prefers its own targets: a Zipf ranking over a feature-specific permutation.
    preference = np.stack([rng.permutation(n_targets) for _ in range(n_features)])
    target = preference[feature, zipf_choice(rng, n_targets, n_examples, 1.1)]

    t = np.arange(n_records)[:, None]
    start = rng.uniform(2.0, 7.0, n_examples)
    floor = start * rng.uniform(0.2, 0.7, n_examples)
    rate = rng.uniform(5.0, 40.0, n_examples)
    losses = floor + (start - floor) * np.exp(-t / rate)
    losses += rng.normal(0.0, 1.0, (n_records, n_examples)) * (noise * rng.uniform(0.5, 2.0, n_examples))
    losses += np.cumsum(rng.normal(0.0, noise * 0.3, (n_records, n_examples)), axis=0)

    pairs = []
    order = rng.permutation(n_features)
    for f in order:
        if len(pairs) == n_pairs:
            break
        targets, sizes = np.unique(target[feature == f], return_counts=True)
        big = np.argsort(-sizes, kind="stable")[:2]
        if big.size < 2 or sizes[big[1]] < min_pair_size:
            continue
        t_a, t_b = int(targets[big[0]]), int(targets[big[1]])
        swing = swing_process(rng, n_records, pair_scale)
        ratio = rng.uniform(0.6, 1.4)
        for tgt, sign in ((t_a, 1.0), (t_b, -ratio)):
            members = np.flatnonzero((feature == f) & (target == tgt))
            losses[:, members] += sign * np.outer(swing, rng.uniform(0.5, 1.5, members.size))
        pairs.append(((int(f), t_a), (int(f), t_b)))

    planted_pair_features = {p[0][0] for p in pairs}
    cluster_features = [int(f) for f in order if int(f) not in planted_pair_features][:n_cluster_features]
    previous = None
    for i, f in enumerate(cluster_features):
        members = np.flatnonzero(feature == f)
        # Every second cluster mirrors the one before it: anti-phased clusters.
        swing = -previous if (i % 2 == 1 and previous is not None) else swing_process(rng, n_records, cluster_scale, rate=0.4)
        previous = swing
        losses[:, members] += np.outer(swing, rng.uniform(0.7, 1.3, members.size))

    return PlantedTrace(
        losses=np.maximum(losses, 0.0).astype(np.float32),
        steps=(np.arange(n_records) * 10).astype(np.int64),
        keys={"target": target.astype(np.int64), "feature": feature.astype(np.int64)},
        pairs=pairs,
        cluster_features=cluster_features,
    )


@dataclass(frozen=True)
class PairSpec:
    """One planted opposing pair: two groups sharing a feature, with their own sizes and swing.

    amplitude: scale of the shared swing process (loss units); ratio: group b moves by
    -ratio x group a's swing; noise: per-example measurement noise of the pair's members;
    slow: the pair's targets are rare, so their loss collapses `slow` times more slowly.
    """

    size_a: int
    size_b: int
    amplitude: float = 0.12
    ratio: float = 1.0
    noise: float = 0.05
    slow: float = 1.0


@dataclass
class ScenarioTrace(PlantedTrace):
    specs: list[PairSpec] = field(default_factory=list)
    transient_records: int = 0  # records the initial collapse takes (to ~5% of its height)


def scenario_trace(
    specs: list[PairSpec],
    *,
    n_records: int = 100,
    n_background: int = 5000,
    start_loss: float = 9.0,
    collapse_records: float = 4.0,
    noise: float = 0.05,
    n_features: int = 40,
    n_targets: int = 150,
    n_cluster_pairs: int = 0,
    cluster_size: int = 150,
    cluster_scale: float = 0.25,
    seed: int = 0,
) -> ScenarioTrace:
    """A trace like a real run's: every loss collapses from ~`start_loss` to ~1 within the first
    few records (rate `collapse_records`, slower for rare targets), measurement noise that is
    largest early, then the planted pairs' swings (active from the first record).

    Background examples get Zipf keys as in `planted_trace`; each planted pair gets a feature
    and two targets of its own (ids above the background's), sized exactly as its spec says.
    n_cluster_pairs: pairs of anti-phased clusters, each `cluster_size` examples sharing one
    feature (but many targets), so only clustering — not key pairs — can find them.
    """
    rng = np.random.default_rng(seed)
    feature = [zipf_choice(rng, n_features, n_background, 0.8)]
    preference = np.stack([rng.permutation(n_targets) for _ in range(n_features)])
    target = [preference[feature[0], zipf_choice(rng, n_targets, n_background, 1.1)]]
    slowness = [np.ones(n_background)]
    pairs, members_of = [], []
    next_feature, next_target, offset = n_features, n_targets, n_background
    for spec in specs:
        f, t_a, t_b = next_feature, next_target, next_target + 1
        next_feature, next_target = next_feature + 1, next_target + 2
        feature.append(np.full(spec.size_a + spec.size_b, f))
        target.append(np.repeat([t_a, t_b], [spec.size_a, spec.size_b]))
        slowness.append(np.full(spec.size_a + spec.size_b, spec.slow))
        members_of.append((np.arange(offset, offset + spec.size_a),
                           np.arange(offset + spec.size_a, offset + spec.size_a + spec.size_b)))
        offset += spec.size_a + spec.size_b
        pairs.append(((f, t_a), (f, t_b)))
    cluster_features = []
    cluster_members = []
    for _ in range(2 * n_cluster_pairs):
        f = next_feature
        next_feature += 1
        feature.append(np.full(cluster_size, f))
        target.append(rng.integers(0, n_targets, cluster_size))
        slowness.append(np.ones(cluster_size))
        cluster_members.append(np.arange(offset, offset + cluster_size))
        offset += cluster_size
        cluster_features.append(f)
    feature, target, slowness = np.concatenate(feature), np.concatenate(target), np.concatenate(slowness)
    n = feature.size

    t = np.arange(n_records)[:, None]
    floor = rng.uniform(0.5, 2.0, n)
    start = start_loss * rng.uniform(0.9, 1.1, n)
    rate = collapse_records * rng.uniform(0.7, 1.5, n) * slowness
    decay = np.exp(-t / rate)
    losses = floor + (start - floor) * decay
    example_noise = noise * rng.uniform(0.5, 2.0, n)
    for spec, (a, b) in zip(specs, members_of):
        example_noise[np.concatenate([a, b])] = spec.noise * rng.uniform(0.5, 2.0, a.size + b.size)
    losses += rng.normal(0.0, 1.0, (n_records, n)) * example_noise * (1.0 + 4.0 * decay)
    losses += np.cumsum(rng.normal(0.0, noise * 0.3, (n_records, n)), axis=0)
    for spec, (a, b) in zip(specs, members_of):
        swing = swing_process(rng, n_records, spec.amplitude)
        losses[:, a] += np.outer(swing, rng.uniform(0.5, 1.5, a.size))
        losses[:, b] -= spec.ratio * np.outer(swing, rng.uniform(0.5, 1.5, b.size))
    for i in range(0, len(cluster_members), 2):
        swing = swing_process(rng, n_records, cluster_scale, rate=0.4)
        losses[:, cluster_members[i]] += np.outer(swing, rng.uniform(0.7, 1.3, cluster_size))
        losses[:, cluster_members[i + 1]] -= np.outer(swing, rng.uniform(0.7, 1.3, cluster_size))
    transient = int(np.ceil(collapse_records * 1.5 * 3.0))
    return ScenarioTrace(
        losses=np.maximum(losses, 0.0).astype(np.float32),
        steps=(np.arange(n_records) * 10).astype(np.int64),
        keys={"target": target.astype(np.int64), "feature": feature.astype(np.int64)},
        pairs=pairs, cluster_features=cluster_features, specs=list(specs),
        transient_records=transient,
    )
