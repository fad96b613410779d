"""A synthetic run with planted events, for tests and for trying `find_events` without training.

Probe trace: every example's loss decays towards its own floor, with small measurement noise;
keys are a feature (0..n_features-1) and a target (0..n_targets-1) drawn uniformly. At each
planted interval the two groups (feature, target_a) and (feature, target_b) swing: one rises by
`swing`, the other falls by as much (alternating which), so the mean barely moves.

metrics: loss, lr, grad_norm and sharpness at every step. The training loss spikes by
`spike_size` at the step closing each planted interval, the gradient norm doubles from
`lead` steps before it, and the sharpness sits above its threshold 2/lr in windows around the
spikes (and stays below it elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyntheticRun:
    metrics: list[dict]
    losses: np.ndarray  # float32 [records, examples]
    steps: np.ndarray  # int64 [records]
    keys: dict[str, np.ndarray]
    group_a: tuple[int, int]  # (feature, target)
    group_b: tuple[int, int]
    swing_intervals: list[int] = field(default_factory=list)
    spike_steps: list[int] = field(default_factory=list)


def synthetic_run(seed: int = 0, *, n_records: int = 240, n_examples: int = 2000, every: int = 2,
                  n_features: int = 10, n_targets: int = 10, n_swings: int = 8, swing: float = 2.5,
                  noise: float = 0.005, spike_size: float = 0.5, lead: int = 2, lr: float = 0.05,
                  eos_half_width: int = 12) -> SyntheticRun:
    rng = np.random.default_rng(seed)
    feature = rng.integers(0, n_features, n_examples)
    target = rng.integers(0, n_targets, n_examples)
    group_a, group_b = (3, 5), (3, 7)
    in_a = (feature == group_a[0]) & (target == group_a[1])
    in_b = (feature == group_b[0]) & (target == group_b[1])
    steps = np.arange(n_records, dtype=np.int64) * every
    floor = rng.uniform(0.5, 3.0, n_examples)
    rate = rng.uniform(0.005, 0.03, n_examples)
    losses = floor + 4.0 * np.exp(-np.outer(np.arange(n_records), rate))
    losses += rng.normal(0.0, noise, losses.shape)
    swings = np.sort(rng.choice(np.arange(20, n_records - 2), n_swings, replace=False))
    shift = np.zeros(n_records)
    for k, i in enumerate(swings):
        shift[i + 1:] += swing if k % 2 == 0 else -swing
    losses[:, in_a] += shift[:, None]
    losses[:, in_b] -= shift[:, None]

    n_steps = int(steps[-1]) + 1
    spike_steps = [int(steps[i + 1]) for i in swings]
    t = np.arange(n_steps)
    loss = 1.0 + 3.0 * np.exp(-t / 150.0) + rng.normal(0.0, 0.01, n_steps)
    grad_norm = 1.0 + rng.normal(0.0, 0.02, n_steps)
    sharpness = 0.7 * (2.0 / lr) + rng.normal(0.0, 0.5, n_steps)
    for s in spike_steps:
        loss[s] += spike_size
        grad_norm[max(0, s - lead): s + 1] *= 2.0
        sharpness[max(0, s - eos_half_width): s + eos_half_width] = 1.05 * (2.0 / lr) + rng.normal(0.0, 0.3)
        sharpness[s] = 1.3 * (2.0 / lr)
    metrics = [{"step": int(s), "loss": float(loss[s]), "lr": lr, "grad_norm": float(grad_norm[s]),
                "sharpness": float(sharpness[s]), "sharpness_threshold": 2.0 / lr, "two_over_lr": 2.0 / lr}
               for s in range(1, n_steps)]
    return SyntheticRun(metrics, losses.astype(np.float32), steps, {"feature": feature, "target": target},
                        group_a, group_b, [int(i) for i in swings], spike_steps)


@dataclass
class SyntheticCatapults:
    metrics: list[dict]  # loss every step; sharpness and its threshold every `every` steps
    crest_steps: list[int]  # true crests (between samples)
    spike_steps: list[int]
    sharpness_steps: np.ndarray
    ratio: np.ndarray  # sharpness / threshold at every step (the truth the samples see)


def synthetic_catapults(seed: int = 0, *, n_steps: int = 300, every: int = 5, lag: int | None = 3,
                        rise: tuple[int, int] = (18, 40), fall_steps: int = 3, crest: tuple[float, float] = (1.26, 1.43),
                        trough: tuple[float, float] = (0.65, 0.95), sharpening: int = 35, lr: float = 0.05,
                        noise: float = 0.01, spike_size: float = 0.2, n_random_spikes: int | None = None,
                        ) -> SyntheticCatapults:
    """Sharpness / (2/lr) rises from 0.75 to 1.0 over `sharpening` steps, then repeats: a linear
    climb over `rise` steps (drawn) to a crest in `crest`, a fall over `fall_steps` steps to a
    trough in `trough`. Loss: a decay with noise `noise`, spikes of `spike_size` at each true
    crest + `lag` steps; `lag=None` puts as many spikes (or `n_random_spikes`) at random steps."""
    rng = np.random.default_rng(seed)
    ratio = np.empty(n_steps)
    ratio[:sharpening] = np.linspace(0.75, 1.0, sharpening)
    t, level, crests = sharpening, 1.0, []
    while t < n_steps:
        top, length = rng.uniform(*crest), int(rng.integers(rise[0], rise[1] + 1))
        climb = np.linspace(level, top, length + 1)[1:]
        bottom = rng.uniform(*trough)
        drop = np.linspace(top, bottom, fall_steps + 1)[1:]
        piece = np.concatenate([climb, drop])
        stop = min(n_steps, t + piece.size)
        ratio[t:stop] = piece[: stop - t]
        if t + length - 1 < n_steps:
            crests.append(t + length - 1)
        t, level = t + piece.size, bottom
    if lag is not None:
        spikes = [c + lag for c in crests if 10 < c + lag < n_steps]
    else:
        count = len(crests) if n_random_spikes is None else n_random_spikes
        spikes = sorted(int(v) for v in rng.choice(np.arange(11, n_steps), count, replace=False))
    threshold = 2.0 / lr
    loss = 0.3 + 0.2 * np.exp(-np.arange(n_steps) / 100.0) + rng.normal(0.0, noise, n_steps)
    loss[spikes] += spike_size
    metrics = []
    for step in range(n_steps):
        record = {"step": step, "loss": float(loss[step]), "lr": lr}
        if step % every == 0:
            record.update(sharpness=float(ratio[step] * threshold * (1.0 + rng.normal(0.0, 0.005))),
                          sharpness_threshold=threshold)
        metrics.append(record)
    return SyntheticCatapults(metrics, crests, spikes, np.arange(0, n_steps, every), ratio)
