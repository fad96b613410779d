"""A toy run (or a lone toy checkpoint plus --data), as analysis sees it: all from the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmprobe.analysis.view_base import RunViewBase, load_checkpoint_model
from lmprobe.errors import LmprobeError
from lmprobe.run import Located
from lmprobe.train.train_sample import TrainSample, hessian_indices, lookahead_indices
from toy.losses import mean_loss
from toy.probe import ToyProbe


class ToyRunView(RunViewBase):
    domain = "toy"
    domain_groupings = ("feature-target", "target")

    @classmethod
    def open_run(cls, located: Located) -> "ToyRunView":
        return cls(located, located.checkpoint, ToyProbe.load(located.run_dir / "probe"))

    @classmethod
    def open_checkpoint(cls, checkpoint: Path, data: str | None) -> "ToyRunView":
        """A lone checkpoint: --data names the data model (opposing, polynomial, or a toy YAML config)."""
        if data is None:
            raise LmprobeError(f"{checkpoint} is not part of an lmprobe run, so it has no probe set; pass --data "
                               f"(opposing, polynomial, or a toy YAML config) to draw one")
        from toy.data import make_data
        from toy.task import ToyTask

        cfg = config_for(data)
        toy = make_data(cfg.data, cfg.train.seed)
        task = ToyTask(cfg, toy)
        n = task.n_train()
        sample = TrainSample([task.train_batch(i) for i in hessian_indices(1, n, n)],
                             [task.train_batch(i) for i in lookahead_indices(n, 0)])
        return cls(Located("checkpoint", None, checkpoint), checkpoint, task.probe, sample)

    # --- showing examples ------------------------------------------------------------------
    def describe(self, index: int) -> tuple[str, str]:
        p = self.probe
        x = p.inputs[index]
        present = int(p.extra_keys["feature"][index]) > 0
        if p.kind == "polynomial":
            text = f"#{int(p.ids[index])} x={x[0]:+.3f}" + (f" z={x[1]:g}" if present else "")
            side = self.domain_key_label("target", int(p.extra_keys["target"][index]))
            return text, f"{p.targets[index]:+.3f} ({side})"
        text = f"#{int(p.ids[index])} " + (f"x1={x[-1]:g}" if present else "no x1")
        return text, self.domain_key_label("target", int(p.extra_keys["target"][index]))

    def domain_key_label(self, name: str, value: int) -> str:
        return self.probe.value_names.get(name, {}).get(int(value), f"{name}={value}")

    # --- the model and its loss ------------------------------------------------------------
    def load_model(self, checkpoint: Path) -> nn.Module:
        from toy.models import load_model

        model = load_checkpoint_model(checkpoint, load_model)
        n_inputs = self.probe.inputs.shape[1]
        if model.config.get("n_inputs") != n_inputs:
            raise LmprobeError(f"{checkpoint} takes {model.config.get('n_inputs')} inputs but the probe has "
                               f"{n_inputs}; pass --data with the data model it was trained on")
        return model.eval()

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return mean_loss(model, batch)


def config_for(data: str):
    """The ToyConfig of a data-model name (a shipped config) or of a toy YAML file."""
    from lmprobe.config import from_dict
    import yaml

    from toy.config import ToyConfig

    configs = Path(__file__).resolve().parent.parent / "configs" / "toy"
    named = {"opposing": "linear-opposing", "linear-opposing": "linear-opposing", "polynomial": "polynomial"}
    path = configs / f"{named[data]}.yaml" if data in named else Path(data)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        raise LmprobeError(f"--data {data!r} is neither a toy data model (opposing, polynomial) nor a readable "
                           f"toy YAML config") from None
    return from_dict(ToyConfig, raw)
