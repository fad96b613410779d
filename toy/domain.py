"""The toy domain, registered under the `lmprobe.domains` entry point "toy" (see lmprobe.domain).

Its task and views are imported only when called, so finding a domain costs nothing."""

from lmprobe.domain import Domain, lazy
from toy.config import ToyConfig

DOMAIN = Domain(
    name="toy",
    config_class=ToyConfig,
    make_task=lazy("toy.task:ToyTask"),
    open_run=lazy("toy.runview:ToyRunView.open_run"),
    open_checkpoint=lazy("toy.runview:ToyRunView.open_checkpoint"),
    model_types=("lmprobe-toy-linear", "lmprobe-toy-mlp"),
    summary_keys=("step", "loss", "val_loss", "sharpness", "two_over_lr"),
    train_script="cli/train_toy.py",
)
