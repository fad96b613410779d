"""The optimizer a run was using at a checkpoint (for Adam's preconditioner and lookahead steps)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lmprobe.config import OptimConfig, from_dict
from lmprobe.errors import LmprobeError
from lmprobe.run import CONFIG_FILE


def run_optim_config(run_dir) -> OptimConfig:
    """Only the `optim` section of a run's config.yaml: readable whatever the domain."""
    from lmprobe.domain import _read_yaml_mapping

    return from_dict(OptimConfig, _read_yaml_mapping(run_dir / CONFIG_FILE).get("optim") or {}, "optim.")


def restore_optimizer(view, model: nn.Module) -> tuple[Any, float | None]:
    """The run's optimizer with its state at `view.checkpoint`, and the lr then; (None, None) if not saved."""
    from lmprobe.train.checkpoint import STATE_FILE, load_training_state, read_info
    from lmprobe.train.optim import build_optimizer

    if view.run_dir is None or not (view.checkpoint / STATE_FILE).is_file():
        return None, None
    optimizer = build_optimizer(model, run_optim_config(view.run_dir))
    try:
        optimizer.load_state_dict(load_training_state(view.checkpoint)["optimizer"])
    except (KeyError, ValueError) as exc:
        raise LmprobeError(f"optimizer state in {view.checkpoint} does not fit the model: {exc}") from None
    return optimizer, read_info(view.checkpoint).get("lr")
