"""`accelerate launch cli/train_lm.py [--config YAML] [key=value ...]`: train a GPT-2 and record
its probe trace into a run directory (the generic launcher, for the text domain)."""

from __future__ import annotations

import sys
from pathlib import Path

from lmprobe.train import launch


def main(argv: list[str] | None = None, default_config: Path | None = None) -> int:
    return launch.main(argv, domain="lm", default_config=default_config)


if __name__ == "__main__":
    sys.exit(main())
