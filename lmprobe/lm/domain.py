"""The text domain, registered under the `lmprobe.domains` entry point "lm" (see lmprobe.domain).

Its task and views are imported only when called, so finding a domain costs nothing."""

from lmprobe.domain import Domain, lazy
from lmprobe.lm.config import LMConfig

DOMAIN = Domain(
    name="lm",
    config_class=LMConfig,
    make_task=lazy("lmprobe.lm.task:LMTask"),
    open_run=lazy("lmprobe.lm.runview:LMRunView.open_run"),
    open_checkpoint=lazy("lmprobe.lm.runview:LMRunView.open_checkpoint"),
    model_types=("gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gptj", "opt", "bloom", "gpt_neo", "phi"),
    summary_keys=("step", "loss", "val_loss", "val_ppl", "unigram_entropy_nats", "tokens_per_s"),
    train_script="cli/train_lm.py",
)
