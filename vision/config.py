"""The vision run config: the core sections plus an image model, an image source and an image probe."""

from __future__ import annotations

from dataclasses import dataclass, field

from lmprobe.config import OptimConfig, SharpnessConfig, TraceConfig, TrainConfig, domain_field

ARCH_CHOICES = ("resnet18", "vgg11", "vgg11_bn", "vit", "mlp", "cnn")


MODEL_OPTIONS = ("width", "depth", "activation", "n_layer", "n_head", "patch_size", "batch_norm")


@dataclass
class VisionModelConfig:
    """An image classifier (vision.models); options left null take the arch's default."""

    arch: str = field(default="cnn", metadata={"choices": ARCH_CHOICES})
    width: int | None = None  # first-stage channels (cnn, resnet18, vgg11*), hidden units (mlp), hidden size (vit)
    depth: int | None = None  # mlp, cnn: hidden layers
    activation: str | None = None  # mlp, cnn: "relu" or "tanh"
    n_layer: int | None = None  # vit: transformer layers
    n_head: int | None = None  # vit: attention heads (divides width)
    patch_size: int | None = None  # vit: patch side in pixels (4 for 32x32 inputs)
    batch_norm: bool | None = None  # cnn: BatchNorm2d after each conv (vgg11_bn and resnet18 always have it)
    init_from: str | None = None  # a saved model folder to start from


@dataclass
class VisionDataConfig:
    """Where images come from: a seeded, class-balanced subset."""

    source: str = "synthetic"  # "synthetic", "cifar10" (the Hub), a folder/.tar.gz of class folders, or the python archive
    n_train: int = 1000
    n_val: int = 500
    augment: bool = False  # random crop (4-pixel padding) + horizontal flip, seeded per step
    loss: str = field(default="ce", metadata={"choices": ("ce", "mse")})  # mse: 0.5 ||logits - onehot||^2
    cache_dir: str | None = None


@dataclass
class VisionTraceConfig(TraceConfig):
    """The image probe: by default every training image (for GD, the whole training subset)."""

    split: str = field(default="train", metadata={"choices": ("train", "val")})
    n_images: int | None = None  # None: the whole split


@dataclass
class VisionConfig:
    """Everything `cli/train_vision.py` needs."""

    domain: str = domain_field("vision")
    name: str | None = None
    out_dir: str = "runs"
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
    data: VisionDataConfig = field(default_factory=VisionDataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    trace: VisionTraceConfig = field(default_factory=VisionTraceConfig)
    sharpness: SharpnessConfig = field(default_factory=SharpnessConfig)
