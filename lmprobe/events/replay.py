"""Spike replay, as PaLM's authors did by hand: does a loss spike come from the data or the state?

From the last checkpoint before a spike at logged step S (whose loss is that of step S-1's batch,
taken before update S), the steps up to the spike are taken again twice with plain optimizer
steps (the run's optimizer state, schedule, clipping, micro-batches and RNG state):

* "same": with the run's own batches (the sampler is a pure function of seed and step, so these
  are the batches the run saw); its losses must reproduce the logged ones, which checks the replay;
* "other": the same, except that the spike's batches (the `window` steps ending at S-1) are
  replaced by other batches of the same sampler (those of steps past the end of the run).

Verdict: "data" when the spike vanishes without its batches (size at most VANISH x the
reproduced one), "state" when it happens anyway (at least PERSIST x), "both" in between. Two
cross terms say which data: the spike batch's loss at the state the other batches led to (did
the lead-up batches build the spike?) and the replacement batch's loss at the spike state (is
the spike batch itself hard?). Sizes are measured from the median of the logged losses before
the window, in units of their robust spread.

Domain-agnostic: the Task comes from the run's config through its domain; this module only
takes optimizer steps. It does not reuse the training loop (no Accelerate, one process).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from lmprobe.config import is_full_batch
from lmprobe.errors import LmprobeError

VANISH = 0.25  # other-batches spike at most this fraction of the reproduced one: the data did it
PERSIST = 0.5  # at least half of it: the state did it (batches only modulate it)
SPIKE_Z = 3.0  # a replayed loss this many robust sd above the baseline is a spike
BASELINE_RECORDS = 20  # logged losses before the window that set the baseline
REPRODUCE_RTOL = 1e-3  # "same" must match the logged losses to this relative error


@dataclass
class ReplayResult:
    """What the two replays of one spike found (losses indexed like `steps`: logged step numbers)."""

    spike_step: int  # logged step S (its loss: step S-1's batch before update S)
    checkpoint_step: int
    replaced_steps: list[int]  # optimizer step indices whose batches "other" swapped
    steps: list[int]  # logged step numbers replayed: checkpoint_step+1 .. S
    logged: list[float | None]  # metrics.jsonl loss at those steps (None when not logged)
    same: list[float]
    other: list[float]
    max_reproduction_error: float  # max |same - logged| / max(1, |logged|) over logged steps
    reproduced: bool
    baseline: float
    scale: float
    size_same: float  # spike size (loss - baseline) in each replay, at S
    size_other: float
    z_same: float
    z_other: float
    spike_batch_at_other_state: float  # loss of the spike's batch at the state "other" reached
    other_batch_at_spike_state: float  # loss of the replacement batch at the state "same" reached
    verdict: str  # "data", "state", "both", "no spike" or "not reproduced"
    explanation: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _baseline(metrics: Sequence[dict], before: int) -> tuple[float, float]:
    """Median and robust sd (1.4826 MAD, floored) of the last logged losses at steps <= before."""
    values = [float(r["loss"]) for r in metrics
              if r.get("loss") is not None and int(r["step"]) <= before and np.isfinite(r["loss"])]
    values = np.asarray(values[-BASELINE_RECORDS:], dtype=np.float64)
    if values.size == 0:
        raise LmprobeError(f"no loss logged at or before step {before}: replay needs a baseline before the spike;"
                           " pick a later spike step")
    median = float(np.median(values))
    mad = 1.4826 * float(np.median(np.abs(values - median))) if values.size > 2 else 0.0
    return median, max(mad, 1e-3 * max(abs(median), 1.0))


class Stepper:
    """Plain optimizer steps of a run from a checkpoint: the training loop's arithmetic, minus
    Accelerate, trace and logging (one process)."""

    def __init__(self, task, cfg, checkpoint: Path, checkpoint_step: int):
        from lmprobe.analysis.view_base import load_checkpoint_model
        from lmprobe.train.checkpoint import load_training_state
        from lmprobe.train.optim import build_optimizer
        from lmprobe.train.sampler import StepSampler

        self.task, self.cfg = task, cfg
        state = load_training_state(checkpoint)
        self.model = load_checkpoint_model(checkpoint, self.task.load_model)
        self.optimizer = build_optimizer(self.model, self.cfg.optim)
        if state["optimizer"] is None:
            raise LmprobeError(f"the optimizer state in {checkpoint} is sharded (FSDP); replay runs on one process"
                               " and needs an unsharded checkpoint")
        self.optimizer.load_state_dict(state["optimizer"])
        self._rng = state["rng"][0]["torch_manual_seed"]  # the CPU generator (dropout) of process 0
        self.step = checkpoint_step
        self.full_batch = is_full_batch(self.cfg.optim)
        if self.full_batch:
            raise LmprobeError("this run trains by full-batch GD: every step sees every example, so there are no"
                               " spike batches to leave out; replay needs a mini-batch run (optim sgd or adamw)")
        self.n_micro = self.cfg.train.grad_accum
        self.sampler = StepSampler(self.task.n_train(), self.cfg.train.batch_size, self.cfg.train.seed)

    def batches(self, step: int) -> list[dict[str, torch.Tensor]]:
        """The micro-batches optimizer step `step` trains on."""
        return [self.task.train_batch(self.sampler.global_batch(step, m, self.n_micro)) for m in range(self.n_micro)]

    def loss_of(self, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """Mean training loss of `batches` at the current parameters (train mode, no update)."""
        self.model.train()
        with torch.no_grad():
            return float(np.mean([float(self.task.loss(self.model, b)) for b in batches]))

    def take(self, batches: Sequence[dict[str, torch.Tensor]]) -> float:
        """One optimizer step on `batches` (its micro-batches); returns the loss before the update."""
        from lmprobe.train.optim import learning_rate, set_learning_rate

        set_learning_rate(self.optimizer, learning_rate(self.step, self.cfg.optim, self.cfg.train))
        self.model.train()
        total = 0.0
        for batch in batches:
            loss = self.task.loss(self.model, batch)
            (loss / len(batches)).backward()
            total += float(loss.detach().double())
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.cfg.optim.grad_clip
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return total / len(batches)

    def __enter__(self) -> "Stepper":
        self._outer_rng = torch.get_rng_state()
        torch.set_rng_state(self._rng)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_rng_state(self._outer_rng)


def run_task(run_dir: Path):
    """(config, Task) of a run, rebuilt from its config.yaml through its domain."""
    from lmprobe.config import load_config
    from lmprobe.domain import domain_of, get_domain
    from lmprobe.run import CONFIG_FILE, locate

    domain = get_domain(domain_of(locate(run_dir)))
    cfg = load_config(domain.config_class, Path(run_dir) / CONFIG_FILE)
    return cfg, domain.make_task(cfg)


def checkpoint_before(run_dir: Path, spike_step: int) -> tuple[int, Path]:
    """The last checkpoint from which step spike_step-1 is still ahead (step <= spike_step - 1)."""
    from lmprobe.train.checkpoint import list_checkpoints

    found = [(s, p) for s, p in list_checkpoints(run_dir) if s <= spike_step - 1]
    if not found:
        have = ", ".join(str(s) for s, _ in list_checkpoints(run_dir)) or "none"
        raise LmprobeError(f"no checkpoint before step {spike_step} to replay from (checkpoints: {have});"
                           " pick a later spike or train with a smaller train.checkpoint_every")
    return found[-1]


def replay_spike(
    run_dir: str | Path,
    spike_step: int,
    *,
    window: int | None = None,
    metrics: Sequence[dict] | None = None,
    offset: int | None = None,
    task=None,
    cfg=None,
    progress=None,
) -> ReplayResult:
    """Replay the steps up to logged step `spike_step` from the checkpoint before it, with the
    run's batches and with the last `window` steps' batches replaced (default: the steps since
    the previous logged loss, so the whole logged interval holding the spike). Replacement
    batches are the sampler's batches of steps `offset` later (default: past the run's end)."""
    from lmprobe.train.metrics_log import read_metrics

    run_dir = Path(run_dir)
    if metrics is None:
        metrics = read_metrics(run_dir / "metrics.jsonl")
    logged = {int(r["step"]): r.get("loss") for r in metrics if "loss" in r}
    if spike_step not in logged or logged[spike_step] is None:
        near = sorted(logged)
        raise LmprobeError(f"step {spike_step} has no logged loss (logged steps: "
                           f"{', '.join(map(str, near[:5]))}{' ...' if len(near) > 5 else ''}); pass a logged step")
    ckpt_step, ckpt = checkpoint_before(run_dir, spike_step)
    if window is None:
        earlier = [s for s in logged if s < spike_step]
        window = spike_step - max(earlier) if earlier else 1
    window = max(1, min(window, spike_step - ckpt_step))
    first_replaced = spike_step - window  # step indices first_replaced .. spike_step-1
    baseline, scale = _baseline(metrics, first_replaced)
    if task is None or cfg is None:
        cfg, task = run_task(run_dir)

    def run(replace: bool) -> tuple[list[float], Stepper]:
        with Stepper(task, cfg, ckpt, ckpt_step) as stepper:
            shift = offset if offset is not None else stepper.cfg.train.steps
            losses = []
            while stepper.step < spike_step - 1:
                index = stepper.step
                losses.append(stepper.take(stepper.batches(index + shift if replace and index >= first_replaced
                                                           else index)))
                if progress is not None:
                    progress(len(losses), spike_step - ckpt_step)
            last = spike_step - 1  # the spike's own loss: measured, no update needed
            losses.append(stepper.loss_of(stepper.batches(last + shift if replace else last)))
            stepper.shift = shift
            return losses, stepper

    same, same_state = run(False)
    other, other_state = run(True)
    last = spike_step - 1
    spike_batch_at_other = other_state.loss_of(other_state.batches(last))
    other_batch_at_spike = same_state.loss_of(same_state.batches(last + same_state.shift))

    steps = list(range(ckpt_step + 1, spike_step + 1))
    logged_values = [None if logged.get(s) is None else float(logged[s]) for s in steps]
    errors = [abs(a - b) / max(1.0, abs(b)) for a, b in zip(same, logged_values) if b is not None]
    max_error = max(errors) if errors else float("nan")
    reproduced = bool(errors) and max_error <= REPRODUCE_RTOL
    size_same, size_other = same[-1] - baseline, other[-1] - baseline
    z_same, z_other = size_same / scale, size_other / scale
    verdict, explanation = _verdict(reproduced, max_error, z_same, z_other, size_same, size_other,
                                    spike_batch_at_other - baseline, other_batch_at_spike - baseline, scale)
    return ReplayResult(
        spike_step=spike_step, checkpoint_step=ckpt_step,
        replaced_steps=list(range(first_replaced, spike_step)), steps=steps, logged=logged_values,
        same=same, other=other, max_reproduction_error=max_error, reproduced=reproduced, baseline=baseline,
        scale=scale, size_same=size_same, size_other=size_other, z_same=z_same, z_other=z_other,
        spike_batch_at_other_state=spike_batch_at_other, other_batch_at_spike_state=other_batch_at_spike,
        verdict=verdict, explanation=explanation,
    )


def _verdict(reproduced: bool, max_error: float, z_same: float, z_other: float, size_same: float,
             size_other: float, spike_batch_other_state: float, other_batch_spike_state: float,
             scale: float) -> tuple[str, str]:
    if not reproduced:
        return "not reproduced", (f"replaying the run's own batches missed the logged losses by up to "
                                  f"{max_error:.2g} (relative): nondeterminism (threads, GPU kernels) or a changed"
                                  f" task; the comparison below is between the two replays only")
    if z_same < SPIKE_Z:
        return "no spike", (f"the loss at that step is only {z_same:.1f} robust sd above the baseline of the logged"
                            f" losses before it (a spike needs {SPIKE_Z:g}); pick a step `lmprobe events` lists")
    ratio = size_other / size_same
    which = []
    if spike_batch_other_state / scale >= SPIKE_Z:
        which.append("the spike's own batch is hard even after other lead-up batches")
    if other_batch_spike_state / scale >= SPIKE_Z:
        which.append("other batches also spike at the spike's state")
    detail = ("; " + "; ".join(which)) if which else ""
    if ratio <= VANISH or z_other < SPIKE_Z:
        return "data", f"without its batches the spike shrinks to {ratio:.0%} of its size (z {z_other:.1f}){detail}"
    if ratio >= PERSIST:
        return "state", f"with other batches the spike still reaches {ratio:.0%} of its size (z {z_other:.1f}){detail}"
    return "both", f"with other batches the spike reaches {ratio:.0%} of its size (z {z_other:.1f}){detail}"
