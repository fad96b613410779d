"""The data map (Swayamdipta et al. 2020): variability on x, confidence on y, one point per
example, coloured by Rho-1 class. Above `max_points` a seeded uniform sample is drawn (said
in the title), with small translucent markers, so 10^6 examples still render in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lmprobe.dynamics.stats import RHO1_CLASSES, ExampleStats

CLASS_COLOURS = {"H->H": "#d62728", "L->H": "#ff7f0e", "H->L": "#2ca02c", "L->L": "#1f77b4"}
CLASS_MEANING = {"H->H": "hard throughout", "L->H": "got worse", "H->L": "learned", "L->L": "easy throughout"}


def data_map_figure(stats: ExampleStats, path: str | Path, *, max_points: int = 200_000,
                    seed: int = 0, dpi: int = 120) -> Path:
    """Save the variability x confidence scatter as a PNG and return its path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    shown = np.flatnonzero(stats.finite)
    total = shown.size
    if total > max_points:
        shown = np.sort(np.random.default_rng(seed).choice(shown, size=max_points, replace=False))
    alpha = float(np.clip(2000 / max(1, shown.size), 0.05, 0.8))
    size = 4.0 if shown.size < 20_000 else 1.0

    fig = Figure(figsize=(7, 6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    shares = stats.class_shares
    for code, name in enumerate(RHO1_CLASSES):
        members = shown[stats.rho1_code[shown] == code]
        ax.scatter(stats.variability[members], stats.confidence[members], s=size, alpha=alpha,
                   color=CLASS_COLOURS[name], linewidths=0, rasterized=True,
                   label=f"{name} {CLASS_MEANING[name]} ({shares[name]:.1%})")
    ax.axhline(0.5, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("variability (std of p = exp(-loss) over records)")
    ax.set_ylabel("confidence (mean of p over records)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(left=0)
    start, end = stats.window
    sample = f", random {shown.size:,} of {total:,} shown" if shown.size < total else ""
    ax.set_title(f"Data map: {total:,} examples, {stats.n_records} records, steps {start}..{end}\n"
                 f"{sample.lstrip(', ')}", fontsize=10)
    legend = ax.legend(title="Rho-1 class (start -> end loss)", loc="lower right", fontsize=8, markerscale=4)
    for handle in legend.legend_handles:
        handle.set_alpha(1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
