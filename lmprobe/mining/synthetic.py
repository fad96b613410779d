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
    slow: the pair's targets are rare, so their loss collapses `slow` times more slowly;
    active: (from, to) fractions of the records between which the swing happens (flat
    elsewhere); split_b > 1: group b's examples get split_b targets of their own (about
    size_b / split_b each), so the planted signal is target a against the rest of the feature.
    """

    size_a: int
    size_b: int
    amplitude: float = 0.12
    ratio: float = 1.0
    noise: float = 0.05
    slow: float = 1.0
    active: tuple[float, float] = (0.0, 1.0)  # the fraction of the records where it swings
    split_b: int = 1  # group b's examples spread over this many targets (a one-vs-rest pair)


@dataclass
class ScenarioTrace(PlantedTrace):
    specs: list[PairSpec] = field(default_factory=list)
    rest_targets: list[list[int]] = field(default_factory=list)  # per spec: group b's targets
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
    pairs, members_of, rest_targets = [], [], []
    next_feature, next_target, offset = n_features, n_targets, n_background
    for spec in specs:
        f, t_a, t_b = next_feature, next_target, next_target + 1
        split = max(1, int(spec.split_b))
        b_targets = list(range(t_b, t_b + split))
        next_feature, next_target = next_feature + 1, next_target + 1 + split
        feature.append(np.full(spec.size_a + spec.size_b, f))
        b_sizes = np.diff(np.round(np.linspace(0, spec.size_b, split + 1)).astype(int))
        target.append(np.repeat([t_a] + b_targets, [spec.size_a, *b_sizes]))
        rest_targets.append(b_targets)
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
        first, last = (int(round(f * n_records)) for f in spec.active)
        swing[:first] = 0.0
        swing[last:] = swing[last - 1] if 0 < last < n_records else swing[last:]
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
        transient_records=transient, rest_targets=rest_targets,
    )


@dataclass
class ComplexityTrace(PlantedTrace):
    coarse: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))  # (feature, target) x 2
    fine: tuple[tuple[int, int, int], tuple[int, int, int]] = ((0, 0, 0), (0, 0, 0))  # (feature2, feature, target)


def complexity_trace(
    *,
    n_records: int = 121,
    n_background: int = 3000,
    coarse_size: int = 150,
    fine_size: int = 60,
    fine_dilution: int = 4,
    amplitude: float = 0.12,
    switch: float = 0.5,
    noise: float = 0.05,
    n_features: int = 40,
    n_targets: int = 150,
    seed: int = 0,
) -> ComplexityTrace:
    """A trace where a coarse grouping opposes early and a finer one late (claim 5's shape).

    Keys "target", "feature", "feature2" (text-like). Early (records before `switch`): two
    `coarse_size` groups with one feature and two targets oppose as wholes; their feature2
    values are spread over five values, so the finest grouping sees only parts of them. Late:
    in another feature with two targets of (1 + fine_dilution) x fine_size examples each, only
    the examples with one feature2 value (fine_size per target) oppose; the feature-target
    groups hold them diluted fine_dilution-fold, so feature2-feature-target explains them best.
    The planted targets also occur after background features, so by="target" is diluted too.
    """
    rng = np.random.default_rng(seed)
    feature = zipf_choice(rng, n_features, n_background, 0.8)
    preference = np.stack([rng.permutation(n_targets) for _ in range(n_features)])
    target = preference[feature, zipf_choice(rng, n_targets, n_background, 1.1)]
    feature2 = zipf_choice(rng, n_features, n_background, 0.8)
    f_coarse, f_fine = n_features, n_features + 1
    # The planted targets are common background targets (0..3 after the permutation's ranks).
    t_a, t_b, t_c, t_d = (int(v) for v in preference[0, :4])
    fine_total = (1 + fine_dilution) * fine_size
    parts_feature = [feature, np.full(2 * coarse_size, f_coarse), np.full(2 * fine_total, f_fine)]
    parts_target = [target, np.repeat([t_a, t_b], coarse_size), np.repeat([t_c, t_d], fine_total)]
    fine_f2 = np.concatenate([np.full(fine_size, 0), np.full(fine_total - fine_size, 1)])
    parts_f2 = [feature2, rng.integers(0, 5, 2 * coarse_size), np.concatenate([fine_f2, fine_f2])]
    feature, target, feature2 = (np.concatenate(p) for p in (parts_feature, parts_target, parts_f2))
    n = feature.size
    coarse_a = np.arange(n_background, n_background + coarse_size)
    coarse_b = coarse_a + coarse_size
    fine_start = n_background + 2 * coarse_size
    fine_a = np.arange(fine_start, fine_start + fine_size)
    fine_b = fine_a + fine_total

    t = np.arange(n_records)[:, None]
    start = rng.uniform(2.0, 7.0, n)
    floor = start * rng.uniform(0.2, 0.7, n)
    rate = rng.uniform(5.0, 40.0, n)
    losses = floor + (start - floor) * np.exp(-t / rate)
    losses += rng.normal(0.0, 1.0, (n_records, n)) * (noise * rng.uniform(0.5, 2.0, n))
    losses += np.cumsum(rng.normal(0.0, noise * 0.3, (n_records, n)), axis=0)
    cut = int(round(switch * n_records))
    early = swing_process(rng, n_records, amplitude)
    early[cut:] = early[cut - 1]
    late = swing_process(rng, n_records, amplitude)
    late[:cut] = 0.0
    for members, sign, swing in ((coarse_a, 1.0, early), (coarse_b, -1.0, early),
                                 (fine_a, 1.0, late), (fine_b, -1.0, late)):
        losses[:, members] += sign * np.outer(swing, rng.uniform(0.5, 1.5, members.size))
    return ComplexityTrace(
        losses=np.maximum(losses, 0.0).astype(np.float32),
        steps=(np.arange(n_records) * 10).astype(np.int64),
        keys={"target": target.astype(np.int64), "feature": feature.astype(np.int64),
              "feature2": feature2.astype(np.int64)},
        coarse=((f_coarse, t_a), (f_coarse, t_b)),
        fine=((0, f_fine, t_c), (0, f_fine, t_d)),
    )
