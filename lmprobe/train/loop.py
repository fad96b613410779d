"""The one training loop: Accelerate for devices and processes, generic over a Task.

Each optimiser step s trains on the global batch `StepSampler.global_batch(s, ...)`; every
process takes its slice and DDP averages the gradients, so 1 and N processes follow the same
trajectory. The probe trace at step s is recorded *before* update s+1, so row s describes the
parameters after s updates. Only the main process writes files.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, broadcast_object_list, gather_object, set_seed
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from lmprobe.config import OptimConfig, SharpnessConfig, TraceConfig, TrainConfig, is_full_batch
from lmprobe.errors import LmprobeError, first_line
from lmprobe.trace import TraceWriter
from lmprobe.train.checkpoint import (
    INFO_FILE, RESUME_DIR, begin_checkpoint, checkpoint_name, checkpoint_writes, commit_checkpoint,
    incomplete_checkpoints, latest_checkpoint, list_checkpoints, load_training_state, restore_rng, set_aside,
    staging_folder,
)
from lmprobe.train.metrics_log import MetricsLog
from lmprobe.train.optim import build_optimizer, learning_rate, set_learning_rate
from lmprobe.train.sampler import StepSampler, shard
from lmprobe.train.task import Task
from lmprobe.train.throughput import mfu, peak_flops, peak_memory_mb

#: per-step measurements that differ between identical runs (timings, memory): not part of a run's trajectory
MEASURED_KEYS = ("tokens_per_s", "images_per_s", "mfu", "peak_memory_mb")


@dataclass
class LoopConfig:
    """The config sections the loop reads (the LM and vision configs both carry them)."""

    optim: OptimConfig
    train: TrainConfig
    trace: TraceConfig
    sharpness: SharpnessConfig


class Trainer:
    def __init__(self, task: Task, cfg: LoopConfig, run_dir: Path, accelerator: Accelerator,
                 console: Console | None = None, show_progress: bool = True):
        self.task, self.cfg, self.run_dir, self.acc = task, cfg, Path(run_dir), accelerator
        self.console = console or Console(stderr=True)
        self.show_progress = show_progress and accelerator.is_main_process
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.full_batch = is_full_batch(cfg.optim)
        self.n_micro = full_batch_micro(task.n_train(), cfg) if self.full_batch else cfg.train.grad_accum
        world = accelerator.num_processes
        if cfg.train.batch_size % world:
            raise LmprobeError(
                f"train.batch_size={cfg.train.batch_size} must be divisible by the {world} processes"
            )
        self.sampler = StepSampler(
            task.n_train(), cfg.train.batch_size, cfg.train.seed,
            full_batch=cfg.train.batch_size * self.n_micro if self.full_batch else None,
        )
        self.trace_writer: TraceWriter | None = None
        self.sharpness_fn: Callable[[torch.nn.Module, int, float], dict[str, Any]] | None = None
        #: the run's resolved config as a dict: written into each checkpoint's model card
        self.run_config: dict[str, Any] | None = None
        #: the latest logged metrics (the model card's figures; fit() returns them)
        self.last: dict[str, Any] = {}
        #: called on the main process once a resume has loaded its checkpoint and state (with the step
        #: resumed from, None without a checkpoint): a config change is recorded only when it can run
        self.on_resumed: Callable[[int | None], None] | None = None

    # ------------------------------------------------------------------ setup / resume
    def _build(self, resume: bool) -> int:
        set_seed(self.cfg.train.seed)
        start_step, found = 0, None
        if resume:
            found = self._resumable_checkpoint()
        model = found[1] if found is not None else self.task.build_model()
        optimizer = build_optimizer(model, self.cfg.optim)
        self.model, self.optimizer = self.acc.prepare(model, optimizer)
        # Accelerate's save_state/load_state keep the optimizer, scaler and RNGs in resume/; the
        # model itself lives once, in the Hub folder beside it (sharded copies only under FSDP)
        self.acc.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
        self.acc.register_load_state_pre_hook(lambda models, folder: models.clear())
        self.train_model = compiled(self.model, self.acc) if getattr(self.cfg.train, "compile", False) else self.model
        flops = getattr(self.task, "flops_per_example", None)
        self.flops_per_example = flops(self.acc.unwrap_model(self.model)) if callable(flops) else None
        self.peak_flops = peak_flops(self.acc.device, getattr(self.cfg.train, "peak_flops", None))
        if found is not None:
            start_step, _, state, ckpt = found
            self._restore(ckpt, state, start_step)
        if self.acc.is_main_process:
            self.metrics.truncate_after(start_step)
            if self.cfg.trace.every:
                self.trace_writer = TraceWriter(
                    self.run_dir / "trace", self.task.probe.n_examples, self.cfg.trace.dtype
                )
                self.trace_writer.truncate_before(start_step)
        if resume and self.on_resumed is not None and self.acc.is_main_process:
            self.on_resumed(start_step if found is not None else None)
        return start_step

    def _restore(self, ckpt: Path, state: dict[str, Any], step: int) -> None:
        """Optimizer, scaler and every RNG as they were at `step` (Accelerate's load_state)."""
        try:
            if state["format"] == "accelerate":
                self.acc.load_state(str(ckpt / RESUME_DIR))
            else:  # a checkpoint of lmprobe before save_state
                self.optimizer.load_state_dict(state["optimizer"])
        except Exception as exc:  # noqa: BLE001 - a mismatched optimizer, a sharded state of another world size
            raise LmprobeError(
                f"the training state saved at step {step} does not fit this run ({first_line(exc, 100)}); "
                f"resume with the optim settings and process count the run was started with"
            ) from None
        # again, ourselves: load_state passes over a missing rank or CUDA states of another device
        # count in silence; a launch with more processes than were saved reuses theirs
        saved = state["rng"]
        restore_rng(saved[self.acc.process_index % len(saved)])
        if len(saved) != self.acc.num_processes and self.acc.is_main_process:
            self.console.print(
                f"[yellow]warning:[/] {ckpt.name} was saved by {len(saved)} process(es) and resumes with "
                f"{self.acc.num_processes}: the data order is the same, but random draws (dropout) now differ "
                f"from an uninterrupted run", highlight=False, soft_wrap=True)

    def _resumable_checkpoint(self) -> tuple[int, torch.nn.Module, dict, Path] | None:
        """The latest checkpoint that loads, damaged later ones set aside with a warning.

        The main process reads the candidates and chooses (every file read back, weights_only); the
        others then load only the chosen one, so all resume from the same step. A run that has
        recorded progress but has no checkpoint left is refused: restarting at step 0 would
        overwrite its trace and metrics.
        """
        damaged, chosen, refusal = [], None, None
        if self.acc.is_main_process:
            damaged = [(ckpt, f"checkpoint {ckpt.name} has no {INFO_FILE} (it is incomplete)")
                       for ckpt in incomplete_checkpoints(self.run_dir)]
            for step, ckpt in reversed(list_checkpoints(self.run_dir)):
                try:
                    chosen = (step, *self._load_checkpoint(ckpt, read_optimizer=True), ckpt)
                    break
                except LmprobeError as err:
                    damaged.append((ckpt, str(err)))
            if chosen is None and self._has_progress():
                what = (f"every checkpoint is damaged ({damaged[0][1]})" if damaged
                        else "checkpoints/ holds no checkpoint")
                refusal = (f"cannot resume {self.run_dir}: it has recorded training but {what}; restarting at step 0 "
                           f"would overwrite its trace and metrics (start a new run with another --name)")
        step = chosen[0] if chosen else None
        if self.acc.num_processes > 1:
            step, refusal = broadcast_object_list([step, refusal])
        if refusal:
            raise LmprobeError(refusal)
        if step is not None and chosen is None:
            ckpt = self.run_dir / "checkpoints" / checkpoint_name(step)
            chosen = (step, *self._load_checkpoint(ckpt, read_optimizer=False), ckpt)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            for ckpt, reason in damaged:
                moved = set_aside(ckpt)
                self.console.print(f"[yellow]warning:[/] {reason}; moved it to {moved.name} and resumed from "
                                   f"{'step ' + str(step) if chosen else 'nothing'}", highlight=False,
                                   soft_wrap=True)
        return chosen

    def _load_checkpoint(self, ckpt: Path, read_optimizer: bool) -> tuple[torch.nn.Module, dict[str, Any]]:
        """The model and the checked training state of `ckpt` (its optimizer state is read only to
        find damage: load_state reads it again, so it is not kept)."""
        state = load_training_state(ckpt, read_optimizer=read_optimizer)
        if state["format"] == "accelerate":
            state["optimizer"] = None
        return self._load_model(ckpt), state

    def _load_model(self, ckpt: Path) -> torch.nn.Module:
        try:
            return self.task.load_model(ckpt)
        except Exception as exc:  # noqa: BLE001 - truncated safetensors, missing files, foreign bytes
            reason = first_line(exc)
            raise LmprobeError(f"checkpoint {ckpt.name} has a damaged model ({reason})") from None

    def _has_progress(self) -> bool:
        """Logged steps exist (a trace row at step 0 alone is recomputed identically by a restart)."""
        metrics = self.run_dir / "metrics.jsonl"
        return metrics.is_file() and metrics.stat().st_size > 0

    # ------------------------------------------------------------------ the loop
    def fit(self, resume: bool = False) -> dict[str, Any]:
        step = self._build(resume)
        total = self.cfg.train.steps
        tcfg = self.cfg.train
        units_per_step = self.cfg.train.batch_size * self.n_micro * self.task.units_per_example()
        last = self.last
        progress = self._progress()
        with progress, StopRequests() as stop:
            bar = progress.add_task("train", total=total, completed=step, loss=float("nan"),
                                    lr=0.0, rate=0.0, unit=self.task.unit)
            train_seconds, units_since = 0.0, 0
            while step < total:
                if stop.agreed(self.acc):
                    self._stop_on_request(step, stop.signal_name)
                if self._due(step, self.cfg.trace.every):
                    self.record_trace(step)
                lr = learning_rate(step, self.cfg.optim, tcfg)
                set_learning_rate(self.optimizer, lr)
                started = time.perf_counter()
                loss = self._train_step(step)
                if not math.isfinite(loss):
                    self._stop_on_nonfinite(step, loss)
                logging = self._due(step + 1, tcfg.log_every) or step + 1 == total
                grad_norm, update_norm = self._clip_and_step(measure=logging)
                train_seconds += time.perf_counter() - started
                step += 1
                units_since += units_per_step
                record: dict[str, Any] = {}
                if self._due(step, tcfg.log_every) or step == total:
                    rate = units_since / max(train_seconds, 1e-9)
                    record.update(loss=loss, lr=lr, grad_norm=grad_norm, update_norm=update_norm,
                                  **{f"{self.task.unit}_per_s": rate}, **self._hardware(rate))
                    train_seconds, units_since = 0.0, 0
                    progress.update(bar, loss=loss, lr=lr, rate=rate)
                if self._due(step, tcfg.eval_every) or step == total:
                    record.update(self.evaluate())
                # (at lr 0, the end of a schedule decayed to zero, there is no 2/lr to compare with)
                if self._due(step, self.cfg.sharpness.every) and self.sharpness_fn is not None and lr > 0:
                    with measured(self.acc.unwrap_model(self.model), hessian=True) as model:
                        record.update(self.sharpness_fn(model, step, lr))
                if record:
                    last.update(record, step=step)
                    if self.acc.is_main_process:
                        self.metrics.write({"step": step, **record})
                    if self.acc.trackers:  # train.report_to: the same numbers, to TensorBoard & co
                        self.acc.log({k: v for k, v in record.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)}, step=step)
                if self._due(step, tcfg.checkpoint_every) or step == total:
                    self.save(step)
                progress.update(bar, completed=step)
        if self._due(total, self.cfg.trace.every):
            self.record_trace(total)
        self.acc.wait_for_everyone()
        return last

    @staticmethod
    def _due(step: int, every: int | None) -> bool:
        return bool(every) and step % every == 0

    def _train_step(self, step: int) -> float:
        self.model.train()
        total = torch.zeros((), dtype=torch.float64, device=self.acc.device)
        for micro in range(self.n_micro):
            indices = shard(self.sampler.global_batch(step, micro, self.n_micro),
                            self.acc.process_index, self.acc.num_processes)
            batch = self._to_device(self.task.train_batch(indices))
            last = micro == self.n_micro - 1
            sync = contextlib.nullcontext() if last else self.acc.no_sync(self.model)
            with sync:
                loss = self.task.loss(self.train_model, batch)
                self.acc.backward(loss / self.n_micro)
            total += loss.detach().double()
        mean = self.acc.reduce(total / self.n_micro, reduction="mean")
        return float(mean)

    def _clip_and_step(self, measure: bool = True) -> tuple[float | None, float | None]:
        """Clip, step, and (at logged steps) measure the gradient norm before clipping and the
        norm of the parameter update: the signals a loss spike is compared with."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        clip = self.cfg.optim.grad_clip
        grad_norm = None
        if clip or measure:
            grad_norm = float(self.acc.clip_grad_norm_(params, clip if clip else math.inf))
        before = [p.detach().clone() for p in params] if measure else None
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        update_norm = None
        if before is not None:
            deltas = torch._foreach_sub([p.detach() for p in params], before)
            update_norm = float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(deltas))))
        return grad_norm, update_norm

    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.to(self.acc.device) for k, v in batch.items()}

    def _hardware(self, units_per_s: float) -> dict[str, float]:
        """MFU (when the Task estimates FLOPs and the device's peak is known) and peak memory."""
        out: dict[str, float] = {}
        examples_per_s = units_per_s / max(self.task.units_per_example(), 1)
        utilisation = mfu(examples_per_s, self.flops_per_example, self.peak_flops, self.acc.num_processes)
        if utilisation is not None:
            out["mfu"] = utilisation
        memory = peak_memory_mb(self.acc.device)
        if memory is not None:
            out["peak_memory_mb"] = memory
        return out

    # ------------------------------------------------------------------ evaluation
    @torch.inference_mode()
    def _sharded_losses(self, n_batches: int, batch_fn: Callable[[int], dict], loss_fn) -> np.ndarray | None:
        """Evaluate batches round-robin over processes; the main process gets them in order."""
        with measured(self.acc.unwrap_model(self.model)) as model:
            was_training = model.training
            model.eval()
            mine = []
            for b in range(self.acc.process_index, n_batches, self.acc.num_processes):
                losses = loss_fn(model, self._to_device(batch_fn(b)))
                mine.append((b, losses.float().cpu().numpy().ravel()))
            model.train(was_training)
        gathered = gather_object(mine) if self.acc.num_processes > 1 else mine
        if not self.acc.is_main_process:
            return None
        gathered = sorted(gathered, key=lambda item: item[0])
        return np.concatenate([losses for _, losses in gathered]) if gathered else np.zeros(0)

    def record_trace(self, step: int) -> None:
        bs, probe = self.cfg.trace.batch_size, self.task.probe
        row = self._sharded_losses(probe.n_batches(bs), lambda b: probe.batch(b, bs), probe.losses)
        if row is not None and self.trace_writer is not None:
            self.trace_writer.append(step, row)

    def evaluate(self) -> dict[str, float]:
        """Validation metrics on a fixed subset spread evenly over the held-out split.

        Evenly spaced rather than a prefix: held-out examples come in document order, and a
        prefix can be one long, atypical document.
        """
        bs = self.cfg.train.batch_size
        n_val = self.task.n_val()
        n_examples = min(n_val, self.cfg.train.eval_batches * bs)
        chosen = np.unique(np.linspace(0, n_val - 1, n_examples).round().astype(np.int64))
        n_batches = -(-len(chosen) // bs)
        outputs = self._sharded_losses(
            n_batches,
            lambda b: self.task.val_batch(chosen[b * bs : (b + 1) * bs]),
            self.task.eval_outputs,
        )
        return {} if outputs is None else self.task.eval_summary(outputs)

    # ------------------------------------------------------------------ saving
    def save(self, step: int) -> Path | None:
        """checkpoints/step-NNNNNN, atomically: the Hub folder (main process), then every process's
        part of Accelerate's save_state into resume/, then the rename. Collective: all processes call it.
        A write that fails (a full disk, a file-size limit) is an OSError, whichever library wrote."""
        with checkpoint_writes(staging_folder(self.run_dir, step)):
            return self._write_checkpoint(step)

    def _write_checkpoint(self, step: int) -> Path | None:
        sharded = self.acc.distributed_type == DistributedType.FSDP
        full_state = self.acc.get_state_dict(self.model) if sharded else None  # gathered by every rank
        if self.acc.is_main_process:
            folder = begin_checkpoint(self.run_dir, step)
            model = self.acc.unwrap_model(self.model)
            self.task.save_pretrained(model, folder, **({"state_dict": full_state} if sharded else {}))
            if self.run_config is not None:
                from lmprobe.model_card import write_model_card

                write_model_card(folder, self.run_config, {k: v for k, v in self.last.items() if k != "step"},
                                 step, self.task.domain)
        self.acc.wait_for_everyone()
        self.acc.save_state(str(staging_folder(self.run_dir, step) / RESUME_DIR))
        self.acc.wait_for_everyone()
        if not self.acc.is_main_process:
            return None
        self.metrics.sync()  # the logs up to this step are durable before the checkpoint that resumes from it
        if self.trace_writer is not None:
            self.trace_writer.sync()
        lr = learning_rate(max(step - 1, 0), self.cfg.optim, self.cfg.train)
        return commit_checkpoint(self.run_dir, step, keep=self.cfg.train.keep_checkpoints,
                                 info={"domain": self.task.domain, "optimizer": self.cfg.optim.name, "lr": lr})

    def _save_unless_saved(self, step: int) -> None:
        """Save `step` before stopping, unless it is step 0 or already saved (a re-save would swap a
        good checkpoint for one whose RNGs have moved on). Every process sees the same listing: the
        main process's last commit came before the collective that led here."""
        found = latest_checkpoint(self.run_dir)
        if step > 0 and (found is None or found[0] != step):
            self.save(step)

    def _stop_on_request(self, step: int, signal_name: str) -> None:
        """Ctrl-C or SIGTERM: save the state between two steps and stop with one line."""
        self._save_unless_saved(step)
        self.acc.wait_for_everyone()
        found = latest_checkpoint(self.run_dir)
        where = f"saved {found[1].name}" if found else "nothing to save yet"
        raise Interrupted(f"{signal_name} at step {step}: stopped, {where}; continue with --resume {self.run_dir}")

    def _stop_on_nonfinite(self, step: int, loss: float) -> None:
        """Keep the last finite state, record the event, and stop with a one-line error."""
        model = self.acc.unwrap_model(self.model)
        bad = torch.tensor([0.0 if all(torch.isfinite(p).all() for p in model.parameters()) else 1.0],
                           device=self.acc.device)
        if self.acc.num_processes > 1:  # under FSDP each process sees its own shard: save all or none
            bad = self.acc.reduce(bad, reduction="sum")
        self.optimizer.zero_grad(set_to_none=True)
        if float(bad.item()) == 0.0:
            self._save_unless_saved(step)
        stop = {"step": step, "loss": None, "stopped": f"non-finite loss ({loss})"}
        if self.acc.is_main_process and self.metrics.last() != stop:  # once, not again at each plain retry
            self.metrics.write(stop)
        found = latest_checkpoint(self.run_dir)
        where = f"checkpoint {found[1].name} holds the last finite state" if found else "no checkpoint was saved yet"
        raise LmprobeError(
            f"training loss became {loss} at step {step + 1}; stopped, {where}; "
            f"continue with a lower lr: --resume {self.run_dir} --allow-config-change optim.lr=<lower> "
            f"(or optim.warmup_steps=<more>)"
        )

    # ------------------------------------------------------------------ display
    def _progress(self) -> "Progress | _NullProgress":
        if not self.show_progress:
            return _NullProgress()
        return Progress(
            TextColumn("[bold]step[/] {task.completed}/{task.total}"), BarColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("lr {task.fields[lr]:.2e}"),
            TextColumn("{task.fields[rate]:,.0f} {task.fields[unit]}/s"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=False,
        )


class Interrupted(LmprobeError):
    """Training was stopped by Ctrl-C or SIGTERM after saving what it could."""


class StopRequests:
    """Turns SIGINT/SIGTERM into a request the loop honours between steps (a second Ctrl-C
    interrupts at once). Processes agree on stopping, so none waits in a collective alone."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.signal_name: str = ""
        self._previous: dict[int, Any] = {}
        # under `accelerate launch`/torchrun the parent is the launcher: when it dies (SIGKILL), the
        # workers are re-parented and must stop rather than train on as orphans holding the run lock
        self._launcher = launcher_pid()

    def __enter__(self) -> "StopRequests":
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._request)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _request(self, number: int, frame) -> None:
        import signal

        if self.signal_name and number == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = "Ctrl-C" if number == signal.SIGINT else signal.Signals(number).name

    def agreed(self, acc: Accelerator) -> bool:
        import os

        if self._launcher is not None and not self.signal_name and os.getppid() != self._launcher:
            self.signal_name = "the launcher exited"
        if acc.num_processes == 1:
            return bool(self.signal_name)
        flag = torch.tensor([1.0 if self.signal_name else 0.0], device=acc.device)
        stop = bool(acc.reduce(flag, reduction="sum").item() > 0)
        if stop and not self.signal_name:
            self.signal_name = "a stop request on another process"
        return stop


def launcher_pid() -> int | None:
    """The parent's pid when it is a launcher (torchrun's elastic agent, `accelerate launch`), else
    None: a run started from a shell may outlive the shell (nohup) and must not stop with it."""
    import os

    parent = os.getppid()
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return parent
    try:
        command = Path(f"/proc/{parent}/cmdline").read_bytes()
    except OSError:  # not Linux, or the parent is already gone
        return None
    return parent if b"accelerate" in command else None


def compiled(model: torch.nn.Module, accelerator: Accelerator) -> torch.nn.Module:
    """torch.compile of the prepared model, used for the training forward only: the trace,
    evaluation and Hessian products run the uncompiled module (double backward through a
    compiled graph is not supported). A launch that compiles already (--dynamo_backend) wins."""
    plugin = getattr(accelerator.state, "dynamo_plugin", None)
    if plugin is not None and str(plugin.backend).upper() not in ("NO", "DYNAMOBACKEND.NO"):
        return model
    return torch.compile(model)


@contextlib.contextmanager
def measured(model: torch.nn.Module, hessian: bool = False):
    """The unwrapped model as measurements see it: fp32 (without the autocast wrapper a
    mixed-precision Accelerator puts on forward) and, for Hessian products, an attention kernel
    with a double backward (flash_attention_2 -> sdpa, whose math kernel the Hessian code selects)."""
    original = model.__dict__.get("_original_forward")
    wrapped = model.__dict__.get("forward")
    config = getattr(model, "config", None)
    attn = getattr(config, "_attn_implementation", None)
    switch = hessian and attn == "flash_attention_2" and hasattr(model, "set_attn_implementation")
    try:
        if original is not None and wrapped is not None:
            model.forward = original
        if switch:
            model.set_attn_implementation("sdpa")
        yield model
    finally:
        if switch:
            model.set_attn_implementation(attn)
        if original is not None and wrapped is not None:
            model.forward = wrapped


def full_batch_micro(n_train: int, cfg: LoopConfig) -> int:
    """Micro-batches of one full-batch GD step: every training example exactly once.

    `optim.gd_batches: null` covers the whole training set (n_train must then be a multiple of
    train.batch_size); an explicit count may cover a prefix of it, never more than it.
    """
    bs, chosen = cfg.train.batch_size, cfg.optim.gd_batches
    if chosen is None:
        if n_train % bs:
            raise LmprobeError(
                f"full-batch GD over {n_train} training examples needs train.batch_size dividing {n_train} "
                f"(got {bs}); change train.batch_size, or set optim.gd_batches to use the first "
                f"gd_batches x batch_size examples"
            )
        return n_train // bs
    if chosen < 1 or chosen * bs > n_train:
        raise LmprobeError(
            f"optim.gd_batches={chosen} x train.batch_size={bs} = {chosen * bs} examples per GD step, but the "
            f"training set has {n_train}: each must be counted once; use at most {n_train // bs} (or null for all)"
        )
    return chosen


class _NullProgress(contextlib.nullcontext):
    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        pass
