"""Figures of a run: the training curves with sharpness against its threshold, and the loss
trajectories of opposing groups (the paper's Figure 1 style: two groups swinging out of phase
while the global loss falls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from lmprobe.mining.result import MiningResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    return plt


def training_curves(metrics: Sequence[dict[str, Any]], path: str | Path, formats: Sequence[str] = ()) -> Path:
    """Loss (train, validation) over steps and, when logged, sharpness beside its threshold."""
    plt = _pyplot()
    has_sharpness = any(m.get("sharpness") is not None for m in metrics)
    fig, axes = plt.subplots(1, 2 if has_sharpness else 1, figsize=(11 if has_sharpness else 6, 4), squeeze=False)
    ax = axes[0, 0]
    _line(ax, metrics, "loss", "train loss")
    _line(ax, metrics, "val_loss", "validation loss", marker="o")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.legend()
    if has_sharpness:
        ax = axes[0, 1]
        _line(ax, metrics, "sharpness", "sharpness (top eigenvalue)", marker=".")
        _line(ax, metrics, "sharpness_threshold", "stability threshold", linestyle="--")
        _line(ax, metrics, "preconditioned_sharpness", "preconditioned sharpness", marker=".")
        _line(ax, metrics, "preconditioned_threshold", "Adam threshold 38/lr", linestyle="--")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("top Hessian eigenvalue")
        ax.set_title("Sharpness against its stability threshold", fontsize=10)
        ax.legend()
    axes[0, 0].set_title("Training and validation loss", fontsize=10)
    fig.tight_layout()
    return _save(fig, path, formats)


def opposing_pairs(result: MiningResult, label: Callable[[int], str], path: str | Path, top: int = 4,
                   formats: Sequence[str] = ()) -> Path:
    """Mean loss of each group of the top pairs over the recorded steps, with the global mean
    (pairs of two groups only: a one-vs-rest pair's rest is no group of the result)."""
    plt = _pyplot()
    pairs = [p for p in result.pairs if not p.is_one_vs_rest][:top]
    n = max(1, len(pairs))
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.6), squeeze=False)
    steps = np.asarray(result.steps)
    for ax, pair in zip(axes[0], pairs):
        for g in (pair.group_a, pair.group_b):
            group = result.groups[g]
            ax.plot(steps, group.mean_loss, label=f"{label(g)} (n={group.size})")
        if result.global_mean_loss is not None:
            ax.plot(steps, result.global_mean_loss, color="grey", linestyle=":", label="all probe examples")
        ax.set_title(f"corr {pair.corr:.2f}, score {pair.score:.3g}", fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    if not pairs:
        n_rest = sum(1 for p in result.pairs if p.is_one_vs_rest)
        message = (f"no pair of two groups to draw:\n{n_rest} one-vs-rest pair(s), see lmprobe mine" if n_rest
                   else "no significant opposing pair")
        axes[0, 0].text(0.5, 0.5, message, ha="center", va="center")
    axes[0, 0].set_ylabel("mean loss (nats)")
    fig.tight_layout()
    return _save(fig, path, formats)


def example_grid(rows: Sequence[tuple[str, np.ndarray, Sequence[str]]], path: str | Path,
                 formats: Sequence[str] = ()) -> Path:
    """One row of thumbnails per group: (group label, uint8 images [n, H, W, 3], a title per image)."""
    plt = _pyplot()
    n_cols = max(1, max(len(images) for _, images, _ in rows))
    fig, axes = plt.subplots(len(rows), n_cols, figsize=(1.4 * n_cols, 1.7 * len(rows)), squeeze=False)
    for r, (label, images, titles) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(images):
                ax.imshow(images[c], interpolation="nearest")
                ax.set_title(titles[c], fontsize=6)
        axes[r, 0].text(-0.1, 0.5, label, transform=axes[r, 0].transAxes, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    fig.subplots_adjust(left=0.22)
    return _save(fig, path, formats)


def _line(ax, metrics, key, label, **style) -> None:
    points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
    if points:
        x, y = zip(*points)
        ax.plot(x, y, label=label, **style)


def _save(fig, path: str | Path, formats: Sequence[str] = ()) -> Path:
    """`path`, and the same figure beside it in each other format asked (e.g. svg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    for fmt in formats:
        if f".{fmt}" != path.suffix:
            fig.savefig(path.with_suffix(f".{fmt}"), dpi=120)
    _pyplot().close(fig)
    return path
