"""Which probe examples point along the sharp direction: d/dt loss_i(theta + t v) at t = 0.

At each sharpness measurement, v is a top Hessian eigenvector (unit, over the measured
parameters). An example whose loss rises along +v and one whose loss falls along it pull the
parameters in opposite directions along the sharpest direction: the paper's opposing signals,
measured rather than guessed. One forward-mode AD pass per probe batch gives every example's
derivative (the probe's own per-example loss, eval mode, as in the trace), so the cost is about
that of 2-3 trace rows; attention runs through SDPA's math kernel, the one with forward AD, and a
model with an op lacking forward AD falls back to two reverse passes (the double-backward trick).

Layout: run_dir/alignment/top-1/, top-2/, ... one folder per eigenvector, each in the trace
format (lmprobe.trace: one row per measurement step, one value per probe example). Eigenvectors
have no sign; each row is oriented to correlate positively with the previous one (the first so
that the probe's mean derivative is >= 0), so that rows compare over time, resumed runs too.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from lmprobe.trace import Trace, TraceWriter, read_trace_dir

ALIGNMENT_DIR = "alignment"
ALIGN_KEY = "align"
ALIGN_GROUPINGS = ("align", "align-target")
# |derivative| at most this fraction of the largest |derivative| of its row counts as "no pull"
NEGLIGIBLE = 1e-3
ALIGN_NAMES = {1: "along +v", 0: "along -v", -1: "no pull"}


def vector_folder(run_dir: str | Path, which: int = 1) -> Path:
    return Path(run_dir) / ALIGNMENT_DIR / f"top-{which}"


def _math_attention():
    """SDPA's math kernel: the fused CPU/GPU kernels have no forward-mode derivative."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - older torch
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


class _ProbeLoss(nn.Module):
    """The probe's per-example losses as a module call, so functional_call can swap parameters."""

    def __init__(self, model: nn.Module, losses: Callable[[nn.Module, Any], torch.Tensor]):
        super().__init__()
        self.model = model
        self._losses = losses

    def forward(self, batch: Any) -> torch.Tensor:
        return self._losses(self.model, batch)


def _forward_mode(wrapper: _ProbeLoss, named: Sequence[tuple[str, torch.Tensor]], tangents, batch) -> torch.Tensor:
    import torch.autograd.forward_ad as fwAD
    from torch.func import functional_call

    with torch.no_grad(), fwAD.dual_level(), _math_attention():
        duals = {f"model.{name}": fwAD.make_dual(p.detach(), t) for (name, p), t in zip(named, tangents)}
        out = functional_call(wrapper, duals, (batch,), strict=False)
        tangent = fwAD.unpack_dual(out).tangent
    return torch.zeros_like(out) if tangent is None else tangent


def _double_backward(wrapper: _ProbeLoss, named: Sequence[tuple[str, torch.Tensor]], tangents, batch) -> torch.Tensor:
    """J v by two reverse passes: g(u) = J^T u, then d(g(u) . v)/du = J v."""
    params = [p for _, p in named]
    with torch.enable_grad():
        losses = wrapper(batch).reshape(-1)
        u = torch.zeros_like(losses, requires_grad=True)
        grads = torch.autograd.grad(losses, params, grad_outputs=u, create_graph=True, allow_unused=True)
        dot = sum((g * t).sum() for g, t in zip(grads, tangents) if g is not None)
        if not isinstance(dot, torch.Tensor) or not dot.requires_grad:
            return torch.zeros_like(losses)
        return torch.autograd.grad(dot, u)[0].detach()


def directional_derivatives(
    model: nn.Module,
    losses: Callable[[nn.Module, Any], torch.Tensor],
    batches: Sequence[Any],
    named: Sequence[tuple[str, torch.Tensor]],
    directions: torch.Tensor,
) -> np.ndarray:
    """[k, examples] float64: d/dt losses(model at theta + t v_j, batch) at t = 0 for each column
    v_j of `directions` ([dim, k], flat over the parameters `named`, in order), every batch's
    per-example losses concatenated. The model is evaluated in eval mode and restored after."""
    from lmprobe.hessian.blocks import unflatten

    params = [p for _, p in named]
    wrapper = _ProbeLoss(model, losses)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for j in range(directions.shape[1]):
            tangents = [t.to(p.dtype) for t, p in zip(unflatten(directions[:, j].to(params[0].device), params), params)]
            parts = []
            for batch in batches:
                try:
                    value = _forward_mode(wrapper, named, tangents, batch)
                except NotImplementedError:  # an op without a forward-mode derivative
                    value = _double_backward(wrapper, named, tangents, batch)
                parts.append(value.detach().double().cpu().numpy().ravel())
            rows.append(np.concatenate(parts) if parts else np.zeros(0))
    finally:
        model.train(was_training)
    return np.stack(rows) if rows else np.zeros((0, 0))


def orient_rows(rows: np.ndarray, previous: dict[int, np.ndarray]) -> np.ndarray:
    """Eigenvectors have no sign: flip row j (eigenvector j + 1) to correlate positively with the
    previous measurement's row j, or, with none, so that the probe's mean derivative is >= 0."""
    out = np.array(rows, dtype=np.float64, copy=True)
    for j in range(out.shape[0]):
        before = previous.get(j + 1)
        finite = np.isfinite(out[j]) & (np.isfinite(before) if before is not None else True)
        score = float(out[j][finite] @ before[finite]) if before is not None else float(np.nanmean(out[j]))
        if score < 0:
            out[j] = -out[j]
    return out


class AlignmentWriter:
    """Appends one row per measurement to run_dir/alignment/top-j for each eigenvector j."""

    def __init__(self, run_dir: str | Path, n_examples: int):
        self.run_dir = Path(run_dir)
        self.n_examples = n_examples
        self._writers: dict[int, TraceWriter] = {}

    def truncate_before(self, step: int) -> None:
        """A resumed run rewinds the rows of the abandoned continuation (step >= `step`)."""
        root = self.run_dir / ALIGNMENT_DIR
        for folder in sorted(root.glob("top-*")) if root.is_dir() else []:
            try:
                TraceWriter(folder, self.n_examples).truncate_before(step)
            except Exception:  # a folder from a different probe: start it again
                shutil.rmtree(folder, ignore_errors=True)

    def last_rows(self) -> dict[int, np.ndarray]:
        """Eigenvector number -> its last recorded row (what the next one is oriented against)."""
        out = {}
        root = self.run_dir / ALIGNMENT_DIR
        for folder in sorted(root.glob("top-*")) if root.is_dir() else []:
            trace = read_trace_dir(folder)
            if trace.n_records and trace.n_examples == self.n_examples:
                out[int(folder.name.split("-")[1])] = np.asarray(trace.losses[-1], dtype=np.float64)
        return out

    def append(self, step: int, derivatives: np.ndarray) -> None:
        for j, row in enumerate(np.atleast_2d(derivatives), start=1):
            if j not in self._writers:
                self._writers[j] = TraceWriter(vector_folder(self.run_dir, j), self.n_examples, "float32")
            self._writers[j].append(step, row)


def has_alignment(run_dir: str | Path | None) -> bool:
    if run_dir is None:
        return False
    steps = vector_folder(run_dir) / "steps.bin"
    return steps.is_file() and steps.stat().st_size > 0


def read_alignment(run_dir: str | Path, which: int = 1) -> Trace:
    """The recorded derivatives along eigenvector `which` (1 = top): steps and [rows, examples]."""
    return read_trace_dir(vector_folder(run_dir, which))


def alignment_signs(values: np.ndarray, negligible: float = NEGLIGIBLE) -> np.ndarray:
    """int64 key values: 1 where the loss rises along +v, 0 where it falls, -1 where |value| is
    at most `negligible` times the row's largest (no pull either way; not a shared feature)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    scale = float(np.abs(values[finite]).max()) if finite.any() else 0.0
    out = np.where(values > 0, 1, 0).astype(np.int64)
    out[~finite | (np.abs(values) <= negligible * scale)] = -1
    return out


def alignment_keys(run_dir: str | Path | None, n_examples: int) -> dict[str, np.ndarray]:
    """{"align": signs at the last measurement along the top eigenvector} when recorded, else {}."""
    if not has_alignment(run_dir):
        return {}
    trace = read_alignment(run_dir)
    if trace.n_records == 0 or trace.n_examples != n_examples:
        return {}
    return {ALIGN_KEY: alignment_signs(np.asarray(trace.losses[-1]))}


def align_label(value: int) -> str:
    """A key value of "align" as text."""
    return ALIGN_NAMES.get(int(value), f"align={value}")
