"""`lmprobe push --checkpoint CKPT --repo-id USER/NAME`: publish a checkpoint's model folder on the Hub.

The folder is uploaded as it is (config.json, model.safetensors, tokenizer, README.md model card);
the resume state (resume/) and hidden temporaries are left out. A run directory stands for its
latest checkpoint. Needs a token (`huggingface-cli login` or HF_TOKEN) and a network.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lmprobe.errors import LmprobeError, first_line

NOT_UPLOADED = ["resume/*", "resume/**", "training_state.pt", ".*", "**/.*"]


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("push", help="upload a checkpoint's model folder to the Hugging Face Hub",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("path", nargs="?", metavar="PATH", help="a checkpoint folder, or a run (its latest checkpoint)")
    p.add_argument("--checkpoint", metavar="PATH", help="same as PATH")
    p.add_argument("--repo-id", required=True, help="the Hub repository, USER/NAME (created if missing)")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--message", default=None, help="commit message (default: names the checkpoint)")
    p.set_defaults(run=run)


def model_folder(path: str | Path) -> Path:
    """The folder to upload: a checkpoint, or a run's latest checkpoint."""
    from lmprobe.run import locate

    located = locate(path)
    folder = located.analysed_checkpoint() if located.kind == "run" else located.checkpoint
    if not (folder / "config.json").is_file():
        raise LmprobeError(f"{folder} has no config.json; give a checkpoint folder written by save_pretrained")
    return folder


def upload_patterns(folder: Path) -> list[str]:
    """Files that would be uploaded (relative paths), for the message and for tests."""
    import fnmatch

    files = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
    return [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in NOT_UPLOADED)]


def run(args: argparse.Namespace, console) -> int:
    path = args.path or args.checkpoint
    if path is None:
        raise LmprobeError("give the checkpoint to push: lmprobe push --checkpoint runs/NAME/checkpoints/step-N "
                           "--repo-id USER/NAME")
    folder = model_folder(path)
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise LmprobeError("HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it (and be online) to push")
    from huggingface_hub import HfApi

    api = HfApi()
    files = upload_patterns(folder)
    try:
        api.create_repo(args.repo_id, private=args.private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=args.repo_id, revision=args.revision,
                                 ignore_patterns=NOT_UPLOADED,
                                 commit_message=args.message or f"lmprobe checkpoint {folder.name}")
    except Exception as exc:  # noqa: BLE001 - network, auth and validation errors all become one line
        reason = first_line(exc, 200)
        raise LmprobeError(f"push to {args.repo_id} failed: {reason}") from None
    console.print(f"pushed {len(files)} files from {folder} to {getattr(info, 'commit_url', args.repo_id)}",
                  highlight=False)
    return 0
