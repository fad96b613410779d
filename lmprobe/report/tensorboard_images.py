"""Figures and tables sent to the TensorBoard log a run already writes (train.report_to=
tensorboard), so they sit beside the curves people watch there."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from lmprobe.errors import LmprobeError


def tracker_dir(run_dir: Path) -> Path:
    """The folder holding the run's TensorBoard event files (new events are added beside them)."""
    # the shallowest: Accelerate also writes the hyper-parameters into a timestamped subfolder
    found = sorted(Path(run_dir).glob("trackers/**/events.out.tfevents.*"), key=lambda p: (len(p.parts), str(p)))
    if not found:
        raise LmprobeError(f"{run_dir} has no TensorBoard log: train with train.report_to=tensorboard, "
                           "or leave out --log")
    return found[0].parent


def _writer(run_dir: Path):
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise LmprobeError("--log needs tensorboardX: pip install tensorboardX") from None
    return SummaryWriter(logdir=str(tracker_dir(run_dir)))


def log_images(run_dir: Path, images: Sequence[Path], step: int) -> list[Path]:
    """Each PNG as an image event tagged lmprobe/<file stem>; returns the images logged."""
    import matplotlib.image

    writer = _writer(run_dir)
    try:
        for path in images:
            pixels = matplotlib.image.imread(str(path))[..., :3]  # float RGB in [0, 1]
            writer.add_image(f"lmprobe/{Path(path).stem}", pixels, global_step=step, dataformats="HWC")
    finally:
        writer.close()
    return [Path(p) for p in images]


def log_table(run_dir: Path, tag: str, header: Sequence[str], rows: Sequence[Sequence[str]], step: int) -> None:
    """A Markdown table as a text event (TensorBoard's Text tab renders it)."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    writer = _writer(run_dir)
    try:
        writer.add_text(tag, "\n".join(lines), global_step=step)
    finally:
        writer.close()
