"""Sharpness during training: the top Hessian eigenvalue on fixed batches, every N steps.

Measurements warm-start from the previous eigenvectors (lmprobe.hessian.SharpnessTracker), so
tracking every few steps costs a handful of Hessian-vector products, each value certified to
`tol` by its residual (logged as sharpness_error_bound). The loss measured is the mean loss over
`n_batches * batch_size` training examples: under full-batch GD the first ones (the GD batch, when
the sizes match: the loss GD descends), under SGD and Adam a seeded random sample of the training
split (lmprobe.train.train_sample.random_hessian_indices), large enough that its top eigenvalue is
the loss's and not a few outlier sequences' (`lmprobe sharpness --spread K` measures how much it
depends on the sample). They are saved in probe/train_sample.npz, where `lmprobe sharpness` reads
them too, and are the same at every measurement, so the curve shows the loss landscape changing and
not the sample. Each process measures its share of them; the Hessian module sums the products
across processes.

With `sharpness.alignment` (on by default) each measurement also records, for every probe
example, the derivative of its loss along the top eigenvector(s) into run_dir/alignment
(lmprobe.train.alignment): which examples point along the sharp direction, and which way.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from lmprobe.config import SharpnessConfig
from lmprobe.hessian import SharpnessTracker, measure_sharpness, shard_batches
from lmprobe.train.sampler import shard

METRIC_KEYS = {  # measure_sharpness key -> metrics.jsonl key
    "sharpness": "sharpness",
    "threshold": "sharpness_threshold",
    "gd_threshold": "two_over_lr",
    "preconditioned_sharpness": "preconditioned_sharpness",
    "preconditioned_threshold": "preconditioned_threshold",
    "error_bounds": "sharpness_error_bound",
    "preconditioned_error_bounds": "preconditioned_error_bound",
    "converged": "sharpness_converged",
    "n_products": "hessian_products",
    "seconds": "hessian_seconds",
}
FOLLOW_KEYS = ("follow_cut", "n_above_cut", "preconditioned_follow_cut", "preconditioned_n_above_cut")


def sharpness_hook(task, cfg: SharpnessConfig, batches: list[dict[str, torch.Tensor]],
                   trainer) -> Callable[..., dict[str, Any]]:
    """A `(model, step, lr) -> metrics` callable for `Trainer.sharpness_fn`.

    Under mini-batch SGD it also logs the batch sharpness: the top eigenvalue of the loss of the
    mini-batch the step just trained on (its first micro-batch), which recent work finds sits at
    2/lr under SGD while the full-batch sharpness stays below it.
    """
    batches = hook_batches(task, cfg, batches, trainer)
    mine = [trainer._to_device(b) for b in shard_batches(batches)]
    stochastic = not trainer.full_batch and trainer.cfg.optim.name == "sgd"
    tracker = SharpnessTracker(k=cfg.k, block=cfg.block, tol=cfg.tol, max_iter=cfg.max_iter,
                               follow_above=cfg.follow_above)
    align = alignment_recorder(task, cfg, tracker, trainer) if getattr(cfg, "alignment", False) else None

    def measure(model: torch.nn.Module, step: int, lr: float) -> dict[str, Any]:
        report = tracker.measure(model, task.loss, mine, optimizer=trainer.optimizer, lr=lr)
        for key in ("error_bounds", "preconditioned_error_bounds"):  # the top eigenvalue's bound
            report[key] = (report.get(key) or [None])[0]
        out = {METRIC_KEYS[k]: report[k] for k in METRIC_KEYS if report.get(k) is not None}
        if cfg.k > 1 or cfg.follow_above is not None:
            out["eigenvalues"] = report["eigenvalues"]
            out.update({k: report[k] for k in FOLLOW_KEYS if report.get(k) is not None})
        if stochastic:
            out["batch_sharpness"] = batch_sharpness(model, step - 1, lr)
        if align is not None:
            out.update(align(model, step))
        return out

    def batch_sharpness(model: torch.nn.Module, step: int, lr: float) -> float:
        indices = shard(trainer.sampler.global_batch(step, 0, trainer.n_micro),
                        trainer.acc.process_index, trainer.acc.num_processes)
        batch = trainer._to_device(task.train_batch(indices))
        report = measure_sharpness(model, task.loss, [batch], block=cfg.block, lr=lr, tol=cfg.tol,
                                   max_iter=cfg.max_iter, seed=step)
        return report["sharpness"]

    return measure


def hook_batches(task, cfg: SharpnessConfig, batches: list[dict[str, torch.Tensor]],
                 trainer) -> list[dict[str, torch.Tensor]]:
    """The batches the hook measures on: `batches` (the first training examples) under full-batch GD;
    otherwise a seeded random sample of the same size, which the main process saves in place of
    them in probe/train_sample.npz (a resumed run draws the same sample and leaves the file alone)."""
    from lmprobe.train.train_sample import random_hessian_indices, save_hessian_sample

    if trainer.full_batch:
        return batches
    indices = random_hessian_indices(cfg.n_batches, cfg.batch_size, task.n_train(), trainer.cfg.train.seed)
    batches = [task.train_batch(i) for i in indices]
    if trainer.acc.is_main_process:
        save_hessian_sample(trainer.run_dir / "probe", batches)
    return batches


def alignment_recorder(task, cfg: SharpnessConfig, tracker: SharpnessTracker, trainer) -> Callable[..., dict]:
    """A `(model, step) -> {}` callable writing one alignment row per top eigenvector.

    The probe batches are shared round-robin over processes and gathered; only the main process
    orients (lmprobe.train.alignment.orient_rows, against the last row on disk, so a resumed run
    orients as an uninterrupted one) and writes. Rows of an abandoned continuation are dropped at
    the first call of a resumed run. Nothing goes to metrics.jsonl.
    """
    from accelerate.utils import gather_object

    from lmprobe.hessian.blocks import select_parameters
    from lmprobe.train.alignment import AlignmentWriter, directional_derivatives, orient_rows

    acc, probe, bs = trainer.acc, task.probe, trainer.cfg.trace.batch_size
    writer = AlignmentWriter(trainer.run_dir, probe.n_examples) if acc.is_main_process else None
    first = [True]

    def record(model: torch.nn.Module, step: int) -> dict[str, Any]:
        vectors = tracker.eigenvectors("plain")
        if vectors is None:
            return {}
        named = select_parameters(model, cfg.block)
        mine = list(range(acc.process_index, probe.n_batches(bs), acc.num_processes))
        parts = [(b, directional_derivatives(model, probe.losses, [trainer._to_device(probe.batch(b, bs))],
                                             named, vectors[:, : cfg.k])) for b in mine]
        gathered = gather_object(parts) if acc.num_processes > 1 else parts
        if writer is not None:
            rows = np.concatenate([d for _, d in sorted(gathered, key=lambda item: item[0])], axis=1)
            if first[0]:
                writer.truncate_before(step)
            writer.append(step, orient_rows(rows, writer.last_rows()))
        first[0] = False
        return {}

    return record
