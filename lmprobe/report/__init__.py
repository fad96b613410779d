"""Reporting: rich tables, JSON/CSV export (and figures) of lmprobe results."""

from lmprobe.report.mining_table import (
    clusters_table,
    histogram_table,
    movers_table,
    pairs_table,
    render,
    to_csv,
    to_json,
)

__all__ = ["clusters_table", "histogram_table", "movers_table", "pairs_table", "render", "to_csv", "to_json"]


def __getattr__(name: str):
    """`lmprobe.report.visible_token` (a text-domain helper) moved to lmprobe.lm.display."""
    if name == "visible_token":
        import importlib
        import warnings

        warnings.warn("lmprobe.report.visible_token moved to lmprobe.lm.display.visible_token",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module("lmprobe.lm.display").visible_token
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
