"""The vision domain, registered under the `lmprobe.domains` entry point "vision" (see lmprobe.domain).

Its task and views are imported only when called, so finding a domain costs nothing."""

from lmprobe.domain import Domain, lazy
from vision.config import VisionConfig

DOMAIN = Domain(
    name="vision",
    config_class=VisionConfig,
    make_task=lazy("vision.task:VisionTask"),
    open_run=lazy("vision.runview:VisionRunView.open_run"),
    open_checkpoint=lazy("vision.runview:VisionRunView.open_checkpoint"),
    model_types=("lmprobe-resnet", "lmprobe-vgg", "lmprobe-mlp", "lmprobe-cnn", "vit"),
    summary_keys=("step", "loss", "val_loss", "val_acc", "images_per_s"),
    train_script="cli/train_vision.py",
)
