"""Per-example statistics as a table: one row per example, ready for pandas and datasets.

Columns: `example` (index), every statistic (rho1_class as a string, null for non-finite
examples), then every key (e.g. target, feature) and any extra columns. The schema metadata
holds the parameters and the column definitions as JSON under b"lmprobe.dynamics".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import numpy as np

from lmprobe.dynamics.stats import DEFINITIONS, RHO1_CLASSES, ExampleStats
from lmprobe.errors import LmprobeError

METADATA_KEY = b"lmprobe.dynamics"


def _checked_extra(name: str, values, n: int, taken: set[str]) -> np.ndarray:
    if name in taken:
        raise LmprobeError(f"column {name!r} is already a statistic or key; rename it")
    array = np.asarray(values)
    if array.ndim != 1 or array.shape[0] != n:
        raise LmprobeError(f"column {name!r} has shape {array.shape}; it needs one value per example ({n})")
    return array


def to_table(stats: ExampleStats, keys: Mapping[str, np.ndarray] | None = None,
             extra_columns: Mapping[str, np.ndarray] | None = None):
    """A pyarrow.Table with one row per example (see the module docstring)."""
    import pyarrow as pa

    columns: dict[str, object] = {}
    for name, values in stats.columns().items():
        if name == "rho1_class":
            codes = pa.array(values.astype(np.int32), mask=values < 0)
            values = pa.DictionaryArray.from_arrays(codes, pa.array(RHO1_CLASSES)).cast(pa.string())
        columns[name] = values
    n = stats.n_examples
    for extra in (keys or {}, extra_columns or {}):
        for name, values in extra.items():
            columns[str(name)] = _checked_extra(str(name), values, n, set(columns))
    meta = {"parameters": stats.parameters(), "summary": stats.summary(),
            "definitions": DEFINITIONS, "warnings": stats.warnings}
    table = pa.table(columns)
    return table.replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})


def write_parquet(stats: ExampleStats, path: str | Path, keys: Mapping[str, np.ndarray] | None = None,
                  extra_columns: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write `to_table(...)` as parquet; loads with pandas.read_parquet and
    datasets.Dataset.from_parquet."""
    import pyarrow.parquet as pq

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(to_table(stats, keys, extra_columns), path)
    return path


def read_metadata(path: str | Path) -> dict:
    """The parameters, summary and definitions stored with a parquet file."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if METADATA_KEY not in meta:
        raise LmprobeError(f"{path} was not written by lmprobe.dynamics.write_parquet")
    return json.loads(meta[METADATA_KEY])
