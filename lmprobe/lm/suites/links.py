"""checkpoints/step-NNNNNN of a suite: links to the series' own files, never copies of the weights.

Analysis of a run (open_view, `lmprobe sharpness`, mining around a checkpoint) looks for its
checkpoints there; a suite's checkpoints live elsewhere (a folder of the user's, the Hugging
Face cache), so each recorded one gets a folder of symbolic links to its files plus the
lmprobe.json that marks a complete checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lmprobe.lm.suites.series import SeriesCheckpoint
from lmprobe.train.checkpoint import INFO_FILE, checkpoint_name

#: our marker is written fresh; an lmprobe run's optimiser state (resume/, or training_state.pt in
#: older checkpoints) would mislead lookahead mining, which reads it with this run's defaults
_NOT_LINKED = {INFO_FILE, "resume", "training_state.pt"}


def checkpoint_files(ckpt: SeriesCheckpoint) -> Path | None:
    """The folder holding the checkpoint's files: the folder itself, or its Hugging Face cache snapshot."""
    if not ckpt.on_hub:
        return Path(ckpt.source)
    try:
        from transformers.utils import cached_file

        found = cached_file(ckpt.source, "config.json", revision=ckpt.revision, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached: nothing to link
        return None
    return Path(found).parent if found else None


def link_checkpoint(run_dir: Path, ckpt: SeriesCheckpoint, sha256: str) -> Path | None:
    """Write run_dir/checkpoints/step-NNNNNN as links to `ckpt`'s files; None when they are not local."""
    files = checkpoint_files(ckpt)
    if files is None:
        return None
    final = run_dir / "checkpoints" / checkpoint_name(ckpt.step)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for item in sorted(files.iterdir()):
        if item.name not in _NOT_LINKED and not item.name.startswith("."):
            os.symlink(item.resolve(), tmp / item.name, target_is_directory=item.is_dir())
    info = {"domain": "lm", "step": ckpt.step, "suite": ckpt.identity(), "sha256": sha256}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    return final
