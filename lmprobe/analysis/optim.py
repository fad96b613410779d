"""The optimizer a run was using at a checkpoint (for Adam's preconditioner and lookahead steps)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from lmprobe.config import OptimConfig, from_dict
from lmprobe.errors import LmprobeError, first_line
from lmprobe.run import CONFIG_FILE


def run_optim_config(run_dir) -> OptimConfig:
    """Only the `optim` section of a run's config.yaml: readable whatever the domain."""
    from lmprobe.domain import _read_yaml_mapping

    return from_dict(OptimConfig, _read_yaml_mapping(run_dir / CONFIG_FILE).get("optim") or {}, "optim.")


def restore_optimizer(view, model: nn.Module) -> tuple[Any, float | None]:
    """The run's optimizer with its state at `view.checkpoint` (None if not saved) and the lr then (None if unknown)."""
    from lmprobe.train.checkpoint import INFO_FILE, has_training_state, load_training_state
    from lmprobe.train.optim import build_optimizer

    if view.run_dir is None:
        return None, None
    lr = saved_lr(view.checkpoint) if (view.checkpoint / INFO_FILE).is_file() else None
    if not has_training_state(view.checkpoint):
        return None, lr
    optimizer = build_optimizer(model, run_optim_config(view.run_dir))
    try:
        saved = load_training_state(view.checkpoint)["optimizer"]
    except LmprobeError as err:  # analysis needs the Hub folder; a damaged resume/ state only loses the optimizer
        import warnings

        reason = str(err).split("; it cannot be resumed from")[0].replace(f"{view.checkpoint}{os.sep}", "")
        warnings.warn(f"the training state of {view.checkpoint} is unreadable ({reason}); the weights are "
                      f"used without the optimizer state (no Adam preconditioner; lookahead steps are plain SGD)",
                      stacklevel=2)
        return None, lr
    if saved is None:
        raise LmprobeError(f"the optimizer state in {view.checkpoint} is sharded (FSDP) and cannot be read by "
                           "one process; this measurement needs a checkpoint of an unsharded run")
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, ValueError) as exc:
        raise LmprobeError(f"optimizer state in {view.checkpoint} does not fit the model: {exc}") from None
    return optimizer, lr


def saved_lr(checkpoint) -> float | None:
    """The learning rate a checkpoint's lmprobe.json records (None if it records none), or a one-line error."""
    from lmprobe.train.checkpoint import INFO_FILE, read_info

    try:
        lr = read_info(checkpoint).get("lr")
        if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float))):
            raise ValueError(f"lr is {lr!r}")
    except (OSError, ValueError, AttributeError) as exc:
        reason = first_line(exc)
        raise LmprobeError(f"{checkpoint / INFO_FILE} is damaged ({reason}); restore it, or analyse "
                           f"another checkpoint") from None
    return None if lr is None else float(lr)
