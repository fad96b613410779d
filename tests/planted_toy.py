"""A toy domain with planted opposing signals, trained by the real loop (tests only).

Linear regression on x in R^4: a quarter of the examples ("up") carry a shared feature x0 = 3
with target +1, a quarter ("down") the same feature with target -1, the rest x0 = 0 and
y = w* . x[1:] + noise. The shared feature makes x0 the sharpest direction of the MSE loss
(Hessian 2 E[x x^T]: about 9 along x0, about 2 elsewhere) and the two groups pull w0 in opposite
directions along it. `poison` gives one training example the target 30: a loss spike whenever
its batch is trained on (a spike from the data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmprobe.analysis.view_base import RunViewBase
from lmprobe.config import OptimConfig, SharpnessConfig, TraceConfig, TrainConfig, domain_field
from lmprobe.domain import Domain, register_domain

NAME = "planted"
SHARED = 3.0
W_STAR = np.array([0.3, -0.2, 0.1])
GROUP_NAMES = {0: "other", 1: "up", 2: "down"}


@dataclass
class ToyData:
    n_train: int = 64
    n_val: int = 64
    poison: int | None = None  # a training example whose target becomes 30
    seed: int = 0


@dataclass
class ToyConfig:
    domain: str = domain_field(NAME)
    data: ToyData = field(default_factory=ToyData)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="sgd", lr=0.05, grad_clip=None,
                                                                   schedule="constant"))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(steps=12, batch_size=8, log_every=1,
                                                                   eval_every=6, eval_batches=1,
                                                                   checkpoint_every=2))
    trace: TraceConfig = field(default_factory=lambda: TraceConfig(every=1, batch_size=32))
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)


def make_examples(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    group = np.tile(np.array([1, 2, 0, 0]), n // 4 + 1)[:n]
    rng.shuffle(group)
    x = np.zeros((n, 4), dtype=np.float32)
    x[:, 1:] = rng.standard_normal((n, 3))
    x[group > 0, 0] = SHARED
    y = (x[:, 1:] @ W_STAR + 0.1 * rng.standard_normal(n)).astype(np.float32)
    y[group == 1], y[group == 2] = 1.0, -1.0
    return x, y, group


def mse(model: nn.Module, batch) -> torch.Tensor:
    return ((model(batch["x"]).squeeze(-1) - batch["y"]) ** 2)


class ToyProbe:
    def __init__(self, x: np.ndarray, y: np.ndarray, group: np.ndarray):
        self.x, self.y, self.group = x, y, group

    @property
    def n_examples(self) -> int:
        return len(self.y)

    def keys(self) -> dict[str, np.ndarray]:
        return {"target": self.group.astype(np.int64),
                "feature": np.where(self.group > 0, 1, -1).astype(np.int64)}

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_examples // batch_size)

    def batch(self, index: int, batch_size: int):
        s = slice(index * batch_size, (index + 1) * batch_size)
        return {"x": torch.from_numpy(self.x[s]), "y": torch.from_numpy(self.y[s])}

    def losses(self, model: nn.Module, batch) -> torch.Tensor:
        return mse(model, batch)

    def save(self, probe_dir: Path) -> None:
        probe_dir = Path(probe_dir)
        probe_dir.mkdir(parents=True, exist_ok=True)
        np.savez(probe_dir / "toy.npz", x=self.x, y=self.y, group=self.group)

    @classmethod
    def load(cls, probe_dir: Path) -> "ToyProbe":
        data = np.load(Path(probe_dir) / "toy.npz")
        return cls(data["x"], data["y"], data["group"])


def save_model(model: nn.Module, folder: Path) -> None:
    torch.save(model.state_dict(), Path(folder) / "weights.pt")
    (Path(folder) / "config.json").write_text(json.dumps({"model_type": "planted-linear"}))


def load_model(folder: Path) -> nn.Module:
    model = nn.Linear(4, 1)
    model.load_state_dict(torch.load(Path(folder) / "weights.pt", weights_only=True))
    return model


class ToyTask:
    domain, unit = NAME, "examples"

    def __init__(self, cfg: ToyConfig):
        rng = np.random.default_rng(cfg.data.seed)
        self.train_x, self.train_y, _ = make_examples(cfg.data.n_train, rng)
        if cfg.data.poison is not None:
            self.train_y[cfg.data.poison] = 30.0
        self.probe = ToyProbe(*make_examples(cfg.data.n_val, rng))

    def build_model(self) -> nn.Module:
        model = nn.Linear(4, 1)
        nn.init.zeros_(model.weight)
        nn.init.zeros_(model.bias)
        return model

    def load_model(self, folder: Path) -> nn.Module:
        return load_model(folder)

    def save_pretrained(self, model: nn.Module, folder: Path) -> None:
        save_model(model, folder)

    def n_train(self) -> int:
        return len(self.train_y)

    def n_val(self) -> int:
        return self.probe.n_examples

    def units_per_example(self) -> int:
        return 1

    def train_batch(self, indices):
        return {"x": torch.from_numpy(self.train_x[indices]), "y": torch.from_numpy(self.train_y[indices])}

    def val_batch(self, indices):
        return {"x": torch.from_numpy(self.probe.x[indices]), "y": torch.from_numpy(self.probe.y[indices])}

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return mse(model, batch).mean()

    def eval_outputs(self, model: nn.Module, batch) -> torch.Tensor:
        return mse(model, batch)[:, None]

    def eval_summary(self, outputs: np.ndarray) -> dict[str, float]:
        return {"val_loss": float(np.mean(outputs))}

    def data_summary(self) -> dict:
        return {"n_train": self.n_train()}


class ToyView(RunViewBase):
    domain = NAME
    domain_groupings = ("feature-target", "target")

    @classmethod
    def open_run(cls, located) -> "ToyView":
        return cls(located, located.analysed_checkpoint(), ToyProbe.load(located.run_dir / "probe"))

    def describe(self, index: int) -> tuple[str, str]:
        return f"x0={self.probe.x[index, 0]:g}", GROUP_NAMES[int(self.probe.group[index])]

    def domain_key_label(self, name: str, value: int) -> str:
        return GROUP_NAMES.get(int(value), str(value)) if name == "target" else f"{name}={value}"

    def load_model(self, checkpoint: Path) -> nn.Module:
        return load_model(checkpoint).eval()

    def loss(self, model: nn.Module, batch) -> torch.Tensor:
        return mse(model, batch).mean()


DOMAIN = Domain(NAME, ToyConfig, ToyTask, ToyView.open_run, lambda ckpt, data: None)


def train_toy(run_dir: Path, overrides: list[str] | None = None) -> Path:
    """Train a planted run through the real launcher and loop; returns its run directory."""
    from accelerate import Accelerator
    from rich.console import Console

    from lmprobe.config import from_dict
    from lmprobe.train.launch import train

    register_domain(DOMAIN)
    data: dict = {}
    for item in overrides or []:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = json.loads(value)
    base = ToyConfig()
    cfg = from_dict(ToyConfig, {"optim": vars(base.optim) | data.pop("optim", {}),
                                "train": vars(base.train) | data.pop("train", {}),
                                "trace": vars(base.trace) | data.pop("trace", {}), **data})
    train(DOMAIN, cfg, Path(run_dir), False, Accelerator(), Console(stderr=True, quiet=True),
          show_progress=False)
    return Path(run_dir)
