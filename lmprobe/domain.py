"""Domains: everything that knows what an example *is* (text, images, toys, a user's own).

The core (training loop, trace, miner, Hessian, reports, CLI) never imports a domain. It asks one
through two small interfaces: a `Task` to train (lmprobe.train.task) and a `RunView` to analyse a
run or checkpoint. Domains are found through the `lmprobe.domains` entry-point group, as pytest
finds its plugins, so a third party adds one in its own pyproject.toml without editing lmprobe:

    [project.entry-points."lmprobe.domains"]
    mydomain = "mypackage.domain:DOMAIN"

Every run records its domain (`domain:` in config.yaml, "domain" in each checkpoint's
lmprobe.json); a run without one is a text run from before domains existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
import yaml
from torch import nn

from lmprobe.errors import LmprobeError
from lmprobe.run import CONFIG_FILE, Located, locate
from lmprobe.train.task import Batch, ProbeSet, Task, probe_row

GROUP = "lmprobe.domains"
DEFAULT_DOMAIN = "lm"


class RunView(Protocol):
    """A run (or lone checkpoint) of one domain, as analysis sees it; built from the run dir only."""

    domain: str
    located: Located
    checkpoint: Path  # what to analyse: the checkpoint given, or a run's latest
    probe: ProbeSet
    groupings: tuple[str, ...]  # valid --by values, the default first

    def describe(self, index: int) -> tuple[str, str]:
        """(input, target) of probe example `index`, as text: ("...To: x@localhost", "."), ("img 4711 sky", "plane")."""

    def key_label(self, name: str, value: int) -> str:
        """A key value as text: "[␣the]", "airplane", "top=blue"."""

    def images(self, indices: Sequence[int]) -> np.ndarray | None:
        """uint8 [n, H, W, 3] thumbnails of probe examples, or None for a domain without images."""

    def load_model(self, checkpoint: Path) -> nn.Module:
        """The model at `checkpoint`, in eval mode, checked against the probe."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar mean training loss of a batch: the function Hessians and lookahead steps use."""

    def hessian_batches(self, n_batches: int | None = None, batch_size: int | None = None) -> list[Batch]:
        """The training hook's fixed sharpness batches (regrouped when sizes are given)."""

    def train_batches(self, n_batches: int, batch_size: int) -> list[Batch]:
        """Training batches, disjoint from the probe, for lookahead steps."""


@dataclass(frozen=True)
class Domain:
    """What the core needs to train and to open runs of one domain."""

    name: str
    config_class: type  # the run config (has a `domain` field accepting only `name`)
    make_task: Callable[[Any], Task]  # resolved config -> Task
    open_run: Callable[[Located], RunView]  # a run or a checkpoint inside one
    open_checkpoint: Callable[[Path, str | None], RunView]  # a lone save_pretrained folder + --data
    model_types: tuple[str, ...] = ()  # config.json model_type values a lone checkpoint is recognised by
    summary_keys: tuple[str, ...] = ("step", "loss", "val_loss")
    train_script: str = ""  # shown in messages, e.g. "cli/train_lm.py"


def lazy(target: str) -> Callable[..., Any]:
    """A callable that imports "module:attr.path" on first call, so finding a domain imports nothing heavy."""
    module_name, _, attr = target.partition(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        import importlib

        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj(*args, **kwargs)

    call.__qualname__ = call.__name__ = target
    return call


_registered: dict[str, Domain] = {}


def register_domain(domain: Domain) -> None:
    """Add a domain without an entry point (tests, notebooks)."""
    _registered[domain.name] = domain


def available_domains() -> list[str]:
    return sorted(set(_registered) | {ep.name for ep in entry_points(group=GROUP)})


def get_domain(name: str) -> Domain:
    if name in _registered:
        return _registered[name]
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise LmprobeError(
            f"domain {name!r} is not installed (entry-point group {GROUP}; installed: "
            f"{', '.join(available_domains()) or 'none'}); run pip install -e . or install the package providing it"
        )
    domain = next(iter(found)).load()
    if not isinstance(domain, Domain) or domain.name != name:
        raise LmprobeError(f"entry point {name!r} in {GROUP} does not name a Domain called {name!r}")
    return domain


def domain_of(located: Located) -> str:
    """The domain a run or checkpoint records: config.yaml, then lmprobe.json, then model_type."""
    if located.run_dir is not None:
        saved = _read_yaml_mapping(located.run_dir / CONFIG_FILE)
        return str(saved.get("domain", DEFAULT_DOMAIN))
    info = located.checkpoint / "lmprobe.json"
    if info.is_file():
        recorded = _read_json(info).get("domain")
        if recorded:
            return str(recorded)
    model_type = _read_json(located.checkpoint / "config.json").get("model_type")
    for name in available_domains():
        try:
            domain = get_domain(name)
        except (LmprobeError, ImportError, AttributeError):  # a broken plug-in must not hide the others
            continue
        if model_type in domain.model_types:
            return name
    raise LmprobeError(
        f"{located.checkpoint} has model_type {model_type!r}, which no installed domain claims "
        f"({', '.join(available_domains())}); pass --domain NAME"
    )


def open_view(path: str | Path, data: str | None = None, domain: str | None = None) -> RunView:
    """Open PATH (run, checkpoint in a run, or lone checkpoint + `data`) through its domain."""
    located = locate(path)
    chosen = get_domain(domain or domain_of(located))
    if data is not None or located.run_dir is None:
        return chosen.open_checkpoint(located.analysed_checkpoint() if located.run_dir else located.checkpoint, data)
    return chosen.open_run(located)


def view_probe_losses(view: RunView, model: nn.Module, batch_size: int = 64) -> np.ndarray:
    """One trace row for `model`, computed by the probe's own code (the code the trainer runs)."""
    device = next(model.parameters()).device
    return probe_row(view.probe, model, batch_size, device)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        raise LmprobeError(f"{path} could not be read as YAML; the run directory is damaged") from None
    if not isinstance(data, dict):
        raise LmprobeError(f"{path} is empty or not a mapping; the run directory is damaged "
                           "(restore config.yaml, or start the run again)")
    return data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        raise LmprobeError(f"{path} is not valid JSON; the folder is damaged") from None
    return data if isinstance(data, dict) else {}
