"""metrics.jsonl: one JSON object per logged step, rewound to a checkpoint on resume.

A malformed line (a torn write, a hand edit, a record without an integer step) is skipped with a
warning, never a reason to drop the good lines after it; a resume moves it to metrics.jsonl.malformed.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Any


class MetricsLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, record: dict[str, Any]) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(clean) + "\n")

    def sync(self) -> None:
        """Make every record so far durable (before a checkpoint is committed; see TraceWriter.sync)."""
        if self.path.exists():
            with open(self.path, "rb") as f:
                os.fsync(f.fileno())

    def last(self) -> dict[str, Any] | None:
        """The last well-formed record (None for an empty or missing log)."""
        records = read_metrics(self.path) if self.path.exists() else []
        return records[-1] if records else None

    def truncate_after(self, step: int) -> None:
        """Keep records up to and including `step`, atomically; later ones go, and malformed lines
        are moved (appended) to metrics.jsonl.malformed rather than lost."""
        if not self.path.exists():
            return
        records, bad = _parse(self.path)
        if bad:
            aside = self.path.with_name(self.path.name + ".malformed")
            with open(aside, "a") as f:
                f.write("".join(text + "\n" for _, text in bad))
                f.flush()
                os.fsync(f.fileno())
            warnings.warn(f"{self.path}: moved {len(bad)} malformed line(s) ({_numbers(bad)}) to {aside.name}",
                          stacklevel=2)
        kept = [json.dumps(r) for r in records if r["step"] <= step]
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every well-formed record; malformed lines are skipped with one warning naming them."""
    records, bad = _parse(path)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} malformed line(s) ({_numbers(bad)})", stacklevel=2)
    return records


def _parse(path: str | Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """The well-formed records (JSON objects with an integer step) and the other lines (number, text)."""
    records, bad = [], []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append((number, line))
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if isinstance(step, int) and not isinstance(step, bool):  # every line the loop writes has its step
            records.append(record)
        else:
            bad.append((number, line))
    return records, bad


def _numbers(bad: list[tuple[int, str]]) -> str:
    return ", ".join(str(number) for number, _ in bad[:5]) + (", ..." if len(bad) > 5 else "")
