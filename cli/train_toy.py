"""Train a toy network with planted opposing signals and record its per-example probe-loss trace.

    accelerate launch cli/train_toy.py                                     # linear-opposing (the default)
    accelerate launch cli/train_toy.py --config configs/toy/polynomial.yaml
    accelerate launch cli/train_toy.py data.feature_scale=8 optim.lr=0.05  # any key, overridden
"""

import sys
from pathlib import Path

from lmprobe.train import launch

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy" / "linear-opposing.yaml"

if __name__ == "__main__":
    sys.exit(launch.main(domain="toy", default_config=DEFAULT_CONFIG))
