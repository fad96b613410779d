"""The toy run config: the core sections plus a toy data model, a small network and a probe.

Two data models (data.kind), each with a planted pair of opposing groups:
* "opposing": the paper's linear model. x = (x0, x1): x0 a small genuine signal y * signal / sqrt(dim)
  plus noise, shared by every example; x1 a large feature (data.feature_scale) in a fraction
  (data.feature_fraction) of the examples, the same for both labels, so it agrees with y in one
  group (y = +1) and opposes it in the other (y = -1) and alone predicts nothing.
* "polynomial": a 1-D polynomial (data.coefficients) on a grid of [-1, 1], square loss; a fraction of
  the grid points also carry a large extra input z = data.feature_scale, and their targets sit
  data.offset above (every other one) or below the curve: the same feature, opposite pulls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmprobe.config import OptimConfig, SharpnessConfig, TraceConfig, TrainConfig, domain_field

KINDS = ("opposing", "polynomial")
ARCHS = ("linear", "mlp")


@dataclass
class ToyModelConfig:
    """linear: f(x) = w2^T W1 x (no biases); mlp: `depth` hidden layers of `width` units with biases."""

    arch: str = field(default="linear", metadata={"choices": ARCHS})
    width: int = 16
    depth: int = 2  # mlp only: hidden layers
    activation: str = field(default="tanh", metadata={"choices": ("tanh", "relu")})  # mlp only
    init_scale: float = 1.0  # multiplies the initial weights (linear: N(0, 1/fan_in); mlp: PyTorch's default)
    batch_norm: bool = False  # mlp only: BatchNorm1d before each hidden activation (GD sees the whole set as one batch)


@dataclass
class ToyDataConfig:
    """The data model (module docstring); train and validation sets are drawn from `train.seed`."""

    kind: str = field(default="opposing", metadata={"choices": KINDS})
    n_train: int = 512
    n_val: int = 256
    feature_scale: float = 4.0  # the large feature's magnitude (x1, or z for the polynomial)
    feature_fraction: float = 0.2  # fraction of examples carrying it
    agree_fraction: float = 0.5  # opposing: of those, the fraction with y = +1 (the feature agrees with the label)
    signal: float = 0.05  # opposing: norm of the genuine signal's mean (y * signal along a fixed direction)
    noise: float = 0.05  # opposing: std of the Gaussian noise on each genuine-signal input
    dim: int = 8  # opposing: dimensions of the genuine signal x0
    coefficients: str = "0,-1,0,2"  # polynomial: comma-separated, constant term first (2x^3 - x)
    offset: float = 0.3  # polynomial: the feature points' targets sit this far above / below the curve


@dataclass
class ToyTraceConfig(TraceConfig):
    """The probe: by default every training example (for GD, the whole training set), every step."""

    every: int = 1
    batch_size: int = 1024
    n_examples: int | None = None  # None: every training example


@dataclass
class ToyConfig:
    """Everything `cli/train_toy.py` needs."""

    domain: str = domain_field("toy")
    name: str | None = None
    out_dir: str = "runs"
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    data: ToyDataConfig = field(default_factory=ToyDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trace: ToyTraceConfig = field(default_factory=ToyTraceConfig)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
