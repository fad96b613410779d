"""The Hessian of a training loss as a linear operator, and what to measure with it.

    op = HessianOperator(model, loss_fn, batches, block="transformer.h.0")
    top = lanczos(op, k=3)                  # top eigenpairs, counted products
    measure_sharpness(model, loss_fn, batches, optimizer=opt)   # what a training loop calls
    tracker = SharpnessTracker(); tracker.measure(model, loss_fn, batches, optimizer=opt)  # every step

Model-agnostic: anything with parameters and a `loss_fn(model, batch) -> scalar mean loss`.
"""

from lmprobe.hessian.blocks import BLOCK_ALIASES, select_parameters
from lmprobe.hessian.distributed import shard_batches, unwrap_model
from lmprobe.hessian.lanczos import lanczos
from lmprobe.hessian.modes import measurement_mode
from lmprobe.hessian.operator import DenseOperator, HessianOperator, LinearOperator, NonFiniteProductError
from lmprobe.hessian.power import power_iteration
from lmprobe.hessian.precondition import AdamPreconditioner, PreconditionedOperator, adam_preconditioner
from lmprobe.hessian.results import EigenResult
from lmprobe.hessian.sharpness import measure_sharpness
from lmprobe.hessian.tracking import SharpnessTracker
from lmprobe.hessian.thresholds import (
    StabilityThreshold,
    adam_threshold,
    gd_threshold,
    heavy_ball_threshold,
    nesterov_threshold,
    optimizer_threshold,
)
from lmprobe.hessian.hutchinson import TraceEstimate, hutch_plus_plus_trace, hutchinson_trace

__all__ = [
    "BLOCK_ALIASES",
    "AdamPreconditioner",
    "DenseOperator",
    "EigenResult",
    "HessianOperator",
    "LinearOperator",
    "NonFiniteProductError",
    "PreconditionedOperator",
    "SharpnessTracker",
    "StabilityThreshold",
    "TraceEstimate",
    "adam_preconditioner",
    "adam_threshold",
    "gd_threshold",
    "heavy_ball_threshold",
    "hutch_plus_plus_trace",
    "hutchinson_trace",
    "lanczos",
    "measure_sharpness",
    "measurement_mode",
    "nesterov_threshold",
    "optimizer_threshold",
    "power_iteration",
    "select_parameters",
    "shard_batches",
    "unwrap_model",
]
