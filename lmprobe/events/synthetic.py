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
    metrics = [{"step": int(s), "loss": float(loss[s]), "lr": lr, "grad_norm": float(grad_norm[s]),
                "sharpness": float(sharpness[s]), "sharpness_threshold": 2.0 / lr, "two_over_lr": 2.0 / lr}
               for s in range(1, n_steps)]
    return SyntheticRun(metrics, losses.astype(np.float32), steps, {"feature": feature, "target": target},
                        group_a, group_b, [int(i) for i in swings], spike_steps)
