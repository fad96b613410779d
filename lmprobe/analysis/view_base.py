"""The parts of a RunView that every domain shares: batches from probe/train_sample.npz."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lmprobe.errors import LmprobeError, first_line
from lmprobe.run import Located
from lmprobe.train.task import Batch, ProbeSet
from lmprobe.train.alignment import ALIGN_GROUPINGS, ALIGN_KEY, align_label, alignment_keys
from lmprobe.train.train_sample import TrainSample, read_train_sample, rebatch


def load_checkpoint_model(checkpoint: Path, load: Callable[[Path], Any]) -> Any:
    """`load(checkpoint)`, or a one-line error naming the checkpoint when its files are damaged
    (a truncated model.safetensors, random bytes, a broken config.json) and saying what to use instead.

    A run's checkpoint is worded like the trainer's resume, which sets such a checkpoint aside as NAME.damaged."""
    try:
        return load(checkpoint)
    except (LmprobeError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - SafetensorError, OSError, JSON/ValueError, unpickling
        reason = first_line(exc)
        checkpoint = Path(checkpoint)
        if _run_of(checkpoint) is None:
            raise LmprobeError(f"could not load a model from {checkpoint} ({reason}); check that it is a complete "
                               f"save_pretrained folder (config.json and its weights), or restore it") from None
        raise LmprobeError(f"checkpoint {checkpoint} has a damaged model ({reason}); "
                           f"{_instead_of_damaged(checkpoint)}") from None


def _run_of(checkpoint: Path) -> Path | None:
    """The run directory a RUN/checkpoints/step-NNNNNN folder belongs to (None for a lone folder)."""
    from lmprobe.train.checkpoint import CHECKPOINT_RE

    in_run = CHECKPOINT_RE.match(checkpoint.name) and checkpoint.parent.name == "checkpoints"
    return checkpoint.parent.parent if in_run else None


def _instead_of_damaged(checkpoint: Path) -> str:
    """Advice for a run's damaged checkpoint: set it aside, or analyse another (an earlier one if any)."""
    from lmprobe.train.checkpoint import CHECKPOINT_RE, list_checkpoints

    step = int(CHECKPOINT_RE.match(checkpoint.name).group(1))
    others = [(s, path) for s, path in list_checkpoints(_run_of(checkpoint)) if path.resolve() != checkpoint.resolve()]
    aside = f"move it aside (e.g. rename it to {checkpoint.name}.damaged, as a resume does)"
    if not others:
        return f"{aside}; the run has no other complete checkpoint"
    earlier = [path for s, path in others if s < step]
    other = earlier[-1] if earlier else others[-1][1]
    return f"{aside} so the run's other checkpoints are used, or analyse another checkpoint (e.g. {other})"


class RunViewBase:
    """Subclass and set `domain`, `domain_groupings`; implement describe, domain_key_label,
    load_model and loss.

    A run that recorded alignment along the sharp direction (run_dir/alignment, see
    lmprobe.train.alignment) gets the key "align" and the groupings "align", "align-target"
    after the domain's own.
    """

    domain: str = ""
    domain_groupings: tuple[str, ...] = ("target",)

    @property
    def groupings(self) -> tuple[str, ...]:
        extra = ALIGN_GROUPINGS if ALIGN_KEY in self.keys() else ()
        return tuple(self.domain_groupings) + tuple(g for g in extra if g not in self.domain_groupings)

    def key_label(self, name: str, value: int) -> str:
        return align_label(value) if name == ALIGN_KEY else self.domain_key_label(name, value)

    def domain_key_label(self, name: str, value: int) -> str:
        return f"{name}={value}"

    def __init__(self, located: Located, checkpoint: Path | None, probe: ProbeSet, sample: TrainSample | None = None):
        self.located = located
        self._checkpoint = checkpoint
        self.probe = probe
        self._sample = sample

    @property
    def checkpoint(self) -> Path:
        """The checkpoint to analyse: the one given, else the run's latest, looked up only when
        needed (mining a recorded trace needs none, so a run whose checkpoints are gone still mines)."""
        return self._checkpoint if self._checkpoint is not None else self.located.analysed_checkpoint()

    @property
    def run_dir(self) -> Path | None:
        return self.located.run_dir

    def keys(self) -> dict[str, np.ndarray]:
        """The probe's keys, plus "align" (sign along the top eigenvector) when recorded."""
        if "_keys" not in self.__dict__:
            keys = dict(self.probe.keys())
            keys.update(alignment_keys(self.run_dir, self.probe.n_examples))
            self.__dict__["_keys"] = keys
        return dict(self.__dict__["_keys"])

    def images(self, indices: Sequence[int]) -> np.ndarray | None:
        return None

    # --- the model's own view of the examples (key-free discovery, lmprobe.discovery) ---------
    def features(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """[examples in `batch`, d]: the model's representation of each probe example of a probe
        batch, in probe order (the rows its `probe.losses` would return). A domain overrides it
        with what its model "sees" (vision: the penultimate layer; text: the last hidden state at
        the predicted position). Default: the input of the model's last nn.Linear (its readout
        head), captured while the probe's own losses run, so any domain whose model ends in a
        linear head has one."""
        return head_inputs(model, lambda: self.probe.losses(model, batch))

    def sample(self) -> TrainSample:
        if self._sample is None:
            self._sample = read_train_sample(self.run_dir / "probe")
        return self._sample

    def hessian_batches(self, n_batches: int | None = None, batch_size: int | None = None) -> list[Batch]:
        return rebatch(self.sample().hessian, n_batches, batch_size, "sharpness")

    def train_batches(self, n_batches: int, batch_size: int) -> list[Batch]:
        return rebatch(self.sample().lookahead, n_batches, batch_size, "lookahead")


def last_linear(model: nn.Module) -> nn.Module:
    """The model's last registered nn.Linear: its readout head in every model lmprobe builds."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    if found is None:
        raise LmprobeError(f"{type(model).__name__} has no nn.Linear head whose input could serve as its "
                           f"representation; its domain must provide a `features` hook")
    return found


@torch.no_grad()
def head_inputs(model: nn.Module, run: Callable[[], Any], head: nn.Module | None = None) -> torch.Tensor:
    """[rows, d] float32: every input row fed to `head` (default: the last nn.Linear) while `run()`
    runs, concatenated in call order (a head applied in slabs is called several times)."""
    head = head or last_linear(model)
    seen: list[torch.Tensor] = []

    def hook(_module, inputs):
        seen.append(inputs[0].detach().reshape(-1, inputs[0].shape[-1]).float())

    handle = head.register_forward_pre_hook(hook)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise LmprobeError(f"the head {type(head).__name__} never ran on the probe batch; the domain must provide "
                           f"a `features` hook")
    return torch.cat(seen)
