"""suite.json: what a suite was built from and what has been evaluated, so a rerun resumes.

The trace holds the rows; suite.json says which checkpoint (and weights hash) each row came
from and which checkpoints were skipped as duplicates. A row is appended to the trace before
suite.json names it, so after a kill the trace may hold rows suite.json does not: they are
dropped and computed again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from lmprobe.errors import LmprobeError
from lmprobe.lm.suites.series import SeriesCheckpoint

SUITE_FILE = "suite.json"
SUITE_VERSION = 1
RECORDED, DUPLICATE = "recorded", "duplicate"


@dataclass
class Evaluated:
    """One checkpoint that has been loaded and hashed: its row in the trace, or why it has none."""

    step: int
    source: str
    revision: str | None
    label: str
    sha256: str
    status: str  # RECORDED or DUPLICATE
    duplicate_of: int | None = None  # the earlier step with the same weights
    row: int | None = None  # its row in the trace (None for a skipped duplicate)


@dataclass
class SuiteRecord:
    probe: dict[str, Any]  # the settings that decide the probe; a rerun must repeat them
    series: list[dict[str, Any]] = field(default_factory=list)  # the latest command's checkpoints
    evaluated: list[Evaluated] = field(default_factory=list)
    ready: bool = False  # probe/, config.yaml and trace/ are complete
    version: int = SUITE_VERSION

    def recorded_steps(self) -> list[int]:
        return [e.step for e in self.evaluated if e.status == RECORDED]

    def hashes(self) -> dict[str, int]:
        """sha256 -> the first step that had it."""
        first: dict[str, int] = {}
        for entry in self.evaluated:
            first.setdefault(entry.sha256, entry.step)
        return first


def read_record(run_dir: Path) -> SuiteRecord | None:
    path = run_dir / SUITE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        data["evaluated"] = [Evaluated(**e) for e in data.get("evaluated", [])]
        return SuiteRecord(**data)
    except (ValueError, TypeError):
        raise LmprobeError(f"{path} is damaged (not a suite record); remove {run_dir} and build the suite again") from None


def write_record(run_dir: Path, record: SuiteRecord) -> Path:
    """Replace suite.json in one step (a kill leaves the old one or the new one)."""
    path = run_dir / SUITE_FILE
    tmp = path.with_name(f".{SUITE_FILE}.tmp")
    data = asdict(record)
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def check_same_probe(run_dir: Path, recorded: dict[str, Any], requested: dict[str, Any]) -> None:
    for key, value in requested.items():
        if recorded.get(key) != value:
            raise LmprobeError(
                f"{run_dir} was built with {key}={recorded.get(key)!r}, not {value!r}; rerun with the "
                f"same settings to resume it, or give a new --out"
            )


def pending_checkpoints(run_dir: Path, series: Sequence[SeriesCheckpoint], record: SuiteRecord) -> list[SeriesCheckpoint]:
    """The checkpoints still to evaluate, after checking the evaluated ones belong to this series."""
    by_step = {c.step: c for c in series}
    for entry in record.evaluated:
        planned = by_step.get(entry.step)
        if planned is None or (planned.source, planned.revision) != (entry.source, entry.revision):
            now = planned.describe() if planned else "nothing"
            was = SeriesCheckpoint(entry.step, entry.source, entry.revision).describe()
            raise LmprobeError(
                f"{run_dir} recorded step {entry.step} from {was}, but this series has {now} at that step; "
                f"rerun with the same checkpoints (more may follow the last one), or give a new --out"
            )
    done = {e.step for e in record.evaluated}
    pending = [c for c in series if c.step not in done]
    if pending and done and pending[0].step < max(done):
        raise LmprobeError(
            f"{pending[0].label} (step {pending[0].step}) comes before step {max(done)}, already in the trace of "
            f"{run_dir}; a trace grows in step order only: give a new --out to include it"
        )
    return pending
