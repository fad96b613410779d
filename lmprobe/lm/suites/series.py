"""A series of checkpoints of one causal LM: Hub revisions of a model id, or local folders.

Steps come from the names ("step143000" revisions, "checkpoint-2000" folders) unless --steps
gives them; when some name carries no step, the series is numbered in the order given. The
series is evaluated in step order, so every step must be distinct.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from lmprobe.errors import LmprobeError, first_line

_HUB_STEP = re.compile(r"step(\d+)")
_TRAILING_NUMBER = re.compile(r"(\d+)$")
_OFFLINE_VALUES = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class SeriesCheckpoint:
    """One checkpoint: a Hub model id at a revision, or a local save_pretrained folder."""

    step: int
    source: str  # Hub model id, or the folder's absolute path
    revision: str | None = None  # None for a local folder

    @property
    def on_hub(self) -> bool:
        return self.revision is not None

    @property
    def label(self) -> str:
        return self.revision if self.on_hub else Path(self.source).name

    def describe(self) -> str:
        return f"{self.source}@{self.revision}" if self.on_hub else self.source

    def identity(self) -> dict[str, Any]:
        """What suite.json records to recognise this checkpoint when a suite is resumed."""
        return {"step": self.step, "source": self.source, "revision": self.revision, "label": self.label}

    def from_pretrained(self, loader: Any, what: str, **kwargs: Any) -> Any:
        """`loader.from_pretrained` on this checkpoint, every failure one LmprobeError line."""
        if self.on_hub:
            kwargs["revision"] = self.revision
        else:
            kwargs["local_files_only"] = True
        try:
            return loader.from_pretrained(self.source, **kwargs)
        except Exception as exc:  # noqa: BLE001 - transformers/hub raise OSError, ValueError, HfHubHTTPError...
            reason = first_line(exc, 200)
            raise LmprobeError(f"could not load the {what} of {self.describe()}: {reason}{self._advice()}") from None

    def _advice(self) -> str:
        if self.on_hub and os.environ.get("HF_HUB_OFFLINE", "").lower() in _OFFLINE_VALUES:
            return (" (HF_HUB_OFFLINE is set and this revision is not in the Hugging Face cache: "
                    "download it once online, or pass local folders with --checkpoints)")
        if self.on_hub:
            return " (check the model id and revision names, and the network)"
        return ""


def hub_series(model_id: str, revisions: Sequence[str], steps: Sequence[int] | None = None) -> list[SeriesCheckpoint]:
    """Revisions of one Hub model; steps from "step(\\d+)" in the names, else their order."""
    revisions = [r.strip() for r in revisions if r.strip()]
    if not revisions:
        raise LmprobeError("--revisions is empty; give a comma-separated list, e.g. step1000,step2000")
    if Path(model_id).expanduser().is_dir():
        raise LmprobeError(f"--model {model_id} is a local folder; give local checkpoints with --checkpoints")
    found = [_HUB_STEP.search(r) for r in revisions]
    parsed = [int(m[1]) for m in found] if all(found) else None
    return _ordered([SeriesCheckpoint(s, model_id, r) for s, r in zip(_steps(revisions, steps, parsed), revisions)])


def local_series(folders: Sequence[str | Path], steps: Sequence[int] | None = None) -> list[SeriesCheckpoint]:
    """save_pretrained folders; steps from a trailing number in the folder names, else their order."""
    paths = [Path(f).expanduser() for f in folders]
    for path in paths:
        if not (path / "config.json").is_file():
            what = "does not exist" if not path.exists() else "has no config.json"
            raise LmprobeError(f"checkpoint folder {path} {what}; give folders written by save_pretrained")
    found = [_TRAILING_NUMBER.search(p.resolve().name) for p in paths]
    parsed = [int(m[1]) for m in found] if all(found) else None
    chosen = _steps([str(p) for p in paths], steps, parsed)
    return _ordered([SeriesCheckpoint(s, str(p.resolve())) for s, p in zip(chosen, paths)])


def parse_step_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise LmprobeError(f"--steps {text!r} must be comma-separated integers, e.g. 0,1000,2000") from None


def _steps(names: list[str], given: Sequence[int] | None, parsed: list[int] | None) -> list[int]:
    if given is not None:
        if len(given) != len(names):
            raise LmprobeError(f"--steps has {len(given)} values for {len(names)} checkpoints; give one per checkpoint")
        return list(given)
    return parsed if parsed is not None else list(range(len(names)))


def _ordered(series: list[SeriesCheckpoint]) -> list[SeriesCheckpoint]:
    seen: dict[int, SeriesCheckpoint] = {}
    for ckpt in series:
        if ckpt.step in seen:
            raise LmprobeError(
                f"{seen[ckpt.step].label} and {ckpt.label} both have step {ckpt.step}; "
                f"give each checkpoint its own step with --steps"
            )
        seen[ckpt.step] = ckpt
    return sorted(series, key=lambda c: c.step)
