"""The text domain, registered under the `lmprobe.domains` entry point "lm" (see lmprobe.domain).

Heavy modules are imported inside the callables, so finding a domain costs nothing."""

from __future__ import annotations

from pathlib import Path

from lmprobe.domain import Domain
from lmprobe.lm.config import LMConfig


def _make_task(cfg):
    from lmprobe.lm.task import LMTask

    return LMTask(cfg)


def _open_run(located):
    from lmprobe.lm.runview import LMRunView

    return LMRunView.open_run(located)


def _open_checkpoint(checkpoint: Path, data: str | None):
    from lmprobe.lm.runview import LMRunView

    return LMRunView.open_checkpoint(checkpoint, data)


DOMAIN = Domain(
    name="lm",
    config_class=LMConfig,
    make_task=_make_task,
    open_run=_open_run,
    open_checkpoint=_open_checkpoint,
    model_types=("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gptj", "opt", "bloom", "gpt_neo", "phi"),
    summary_keys=("step", "loss", "val_loss", "val_ppl", "unigram_entropy_nats", "tokens_per_s"),
    train_script="cli/train_lm.py",
)
