"""lmprobe: opposing signals, probe-loss traces and sharpness for neural-network training."""

__version__ = "0.1.0"
