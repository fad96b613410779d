"""How well a run uses its hardware: model FLOPs utilisation (MFU) and peak memory.

MFU follows nanoGPT (and PaLM, appendix B): the FLOPs the model needs per example (the Task's
estimate, e.g. 6N + 12 L H Q T per token for a transformer) times examples per second, over the
devices' peak dense bf16 tensor FLOP/s, whatever precision the run trains in (so fp32 and bf16
runs are compared on one scale). Peaks come from vendors' data sheets; an unknown device (or a
CPU) has none, and `train.peak_flops` supplies one.
"""

from __future__ import annotations

import re
import sys

import torch

#: dense bf16 tensor-core peak FLOP/s per device (no sparsity); an entry matches a CUDA device
#: whose name has all its words (split at spaces and dashes), first match wins; none: no MFU
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM (the "H100 80GB HBM3" of DGX/HGX machines)
    ("H200 NVL", 835e12),
    ("H200", 989e12),
    ("H800", 989e12),
    ("GH200", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("V100", 125e12),  # no bf16: its fp16 tensor-core peak
)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of one device: `override`, else the table's entry for a known GPU, else None."""
    if override is not None:
        return float(override)
    if device.type != "cuda":
        return None
    return table_peak_flops(device_name(device))


def table_peak_flops(name: str) -> float | None:
    """The table's peak for a CUDA device name such as "NVIDIA H100 80GB HBM3" (None if unknown)."""
    words = set(re.split(r"[\s\-]+", name))
    for pattern, flops in PEAK_BF16_FLOPS:
        if set(pattern.split()) <= words:
            return flops
    return None


def mfu(examples_per_s: float, flops_per_example: float | None, peak_per_device: float | None,
        n_devices: int) -> float | None:
    """Achieved model FLOP/s over the peak of all devices (a fraction), or None if either is unknown."""
    if not flops_per_example or not peak_per_device:
        return None
    return examples_per_s * flops_per_example / (peak_per_device * n_devices)


def peak_memory_mb(device: torch.device) -> float | None:
    """This process's peak memory in MiB: allocated CUDA memory on a GPU, resident set on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
