"""The module state a Hessian is measured in, set up and torn down around every product.

The edge-of-stability literature (Cohen et al. 2021; Rosenfeld & Risteski 2024) measures the
Hessian of the training loss, i.e. in train mode: batch norm normalises with the statistics of
the batch. PyHessian measures in eval mode (running statistics) instead. Over a fixed list of
batches, train-mode statistics are deterministic, so the operator is well defined. Three more
things keep it a fixed symmetric matrix and keep the measurement invisible to training:

* dropout modules are switched off (a random mask would make every product a different matrix);
* batch-norm running statistics are not updated (``track_running_stats`` is off for the duration);
* scaled-dot-product attention uses the math kernel: fused kernels lack a double backward.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd


@contextmanager
def measurement_mode(model: nn.Module, train: bool = True) -> Iterator[None]:
    """Put `model` in measurement state; restore every flag it touched on exit."""
    modules = list(model.modules())
    was_training = [m.training for m in modules]
    dropout_p = {m: m.p for m in modules if isinstance(m, _DropoutNd)}
    bn_tracking = {m: m.track_running_stats for m in modules if isinstance(m, _BatchNorm)}
    try:
        model.train(train)
        for m in dropout_p:
            m.p = 0.0
            m.eval()
        for m in bn_tracking:
            m.track_running_stats = False
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        for m, flag in zip(modules, was_training):
            m.training = flag
        for m, p in dropout_p.items():
            m.p = p
        for m, flag in bn_tracking.items():
            m.track_running_stats = flag
