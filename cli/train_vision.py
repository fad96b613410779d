"""Train an image classifier and record its per-image probe-loss trace.

    accelerate launch cli/train_vision.py                                  # the embedded default (synthetic)
    accelerate launch cli/train_vision.py --config configs/vision/cifar-cnn-gd.yaml
    accelerate launch cli/train_vision.py optim.lr=0.05 train.steps=200      # any key, overridden
"""

import sys
from pathlib import Path

from lmprobe.train import launch

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "vision" / "default.yaml"

if __name__ == "__main__":
    sys.exit(launch.main(domain="vision", default_config=DEFAULT_CONFIG))
