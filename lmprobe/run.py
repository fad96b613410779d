"""What a user-given path is: a run directory, a checkpoint of a run, or a lone save_pretrained folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lmprobe.errors import LmprobeError
from lmprobe.train.checkpoint import CHECKPOINT_RE, latest_checkpoint

CONFIG_FILE = "config.yaml"


@dataclass
class Located:
    kind: str  # "run" or "checkpoint"
    run_dir: Path | None  # the run a checkpoint belongs to, if any
    checkpoint: Path | None  # the checkpoint given (None for a run)

    def analysed_checkpoint(self) -> Path:
        """The checkpoint to analyse: the one given, or a run's latest."""
        if self.checkpoint is not None:
            return self.checkpoint
        found = latest_checkpoint(self.run_dir)
        if found is None:
            raise LmprobeError(f"run {self.run_dir} has no checkpoint yet; train longer or resume it")
        return found[1]


def locate(path: str | Path) -> Located:
    """Classify PATH as a run directory or a checkpoint folder, or fail with advice."""
    path = Path(path)
    if not path.exists():
        raise LmprobeError(f"{path} does not exist; give a run directory (runs/NAME) or a checkpoint folder")
    if (path / CONFIG_FILE).is_file() and (path / "probe").is_dir():
        return Located("run", path, None)
    if (path / "config.json").is_file():
        parent = path.parent.parent
        in_run = bool(CHECKPOINT_RE.match(path.name) and path.parent.name == "checkpoints"
                      and (parent / CONFIG_FILE).is_file() and (parent / "probe").is_dir())
        return Located("checkpoint", parent if in_run else None, path)
    raise LmprobeError(
        f"{path} is neither a run directory (config.yaml + probe/) nor a checkpoint folder "
        f"(config.json from save_pretrained)"
    )
