"""Reporting: rich tables, JSON/CSV export (and figures) of lmprobe results."""

from lmprobe.report.mining_table import (
    clusters_table,
    histogram_table,
    movers_table,
    pairs_table,
    render,
    to_csv,
    to_json,
    visible_token,
)

__all__ = ["clusters_table", "histogram_table", "movers_table", "pairs_table", "render",
           "to_csv", "to_json", "visible_token"]
