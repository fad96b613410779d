"""Train a GPT-2-style model and record its probe-loss trace.

    accelerate launch cli/train_lm.py                                   # the embedded default
    accelerate launch cli/train_lm.py --config configs/lm/gpt2-124m-owt.yaml
    accelerate launch cli/train_lm.py train.steps=200 optim.lr=1e-3     # any key, overridden
"""

import sys
from pathlib import Path

from lmprobe.train import launch

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "lm" / "default.yaml"

if __name__ == "__main__":
    sys.exit(launch.main(domain="lm", default_config=DEFAULT_CONFIG))
