"""32x32 RGB image sets for the vision domain: seeded, class-balanced subsets, cached.

Sources (`load_images(source, ...)`):
  * "synthetic": planted opposing signals with a known answer (vision.synthetic), offline;
  * "cifar10": the Hub dataset uoft-cs/cifar10 through `datasets` (needs network or its cache);
  * a local folder or .tar.gz/.tgz/.tar holding train/<class>/*.png|jpg and test/<class>/...;
  * the CIFAR-10 python archive (cifar-10-python.tar.gz, or its extracted folder) with
    data_batch_1..5 / test_batch pickles.

Subsets are chosen by ranking each image on a seeded hash of its place in the source, so the
choice does not depend on the order images are read in (a tarball is streamed once) and the
subset for n images is contained in the subset for more. Images keep their source ids (the
position in the split: batch order for archives and the Hub, sorted class/file name for
folders) so the same image is always shown under the same id. Decoded subsets are cached as
.npz under $LMPROBE_CACHE (or ~/.cache/lmprobe)/vision, keyed by source, sizes, seed and
classes, so the second load is instant.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import io
import os
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from lmprobe.cache import cache_root, fingerprint
from lmprobe.errors import LmprobeError
from vision.cifar_pickle import load_batch
from vision.images import (  # noqa: F401  (part of this module's interface)
    CIFAR10_CLASSES, CIFAR10_MEAN, CIFAR10_STD, IMAGE_SIZE, ImageData, channel_stats, per_class_counts,
)

HUB_DATASET = "uoft-cs/cifar10"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TRAIN_SPLITS, VAL_SPLITS = ("train",), ("test", "val")
_CACHE_VERSION = 1


# ----------------------------------------------------------------------------- public entry
def load_images(source: str, *, n_train: int, n_val: int, seed: int = 0,
                classes: Sequence[str | int] | None = None,
                cache_dir: str | os.PathLike | None = None) -> ImageData:
    """A seeded class-balanced subset of n_train training and n_val validation images."""
    if n_train < 1 or n_val < 0:
        raise LmprobeError(f"need n_train >= 1 and n_val >= 0 images, got n_train={n_train} n_val={n_val}")
    if source == "synthetic":
        from vision.synthetic import make_synthetic

        if classes is not None:
            raise LmprobeError("classes cannot be chosen for the synthetic source: it has its own planted classes")
        return make_synthetic(n_train, n_val, seed)[0]
    reader = _reader_for(source)
    key = {"v": _CACHE_VERSION, "source": reader.identity, "n_train": n_train, "n_val": n_val, "seed": seed,
           "classes": None if classes is None else [str(c) for c in classes]}
    path = cache_root(cache_dir) / "vision" / f"{fingerprint(key)[:24]}.npz"
    if path.is_file():
        try:
            return ImageData.load_npz(path)
        except Exception:  # a damaged entry: rebuild it
            pass
    data = reader.load(n_train, n_val, seed, classes)
    data.save_npz(path)
    return data


def normalize(x_uint8: np.ndarray | torch.Tensor, mean: Sequence[float] = CIFAR10_MEAN,
              std: Sequence[float] = CIFAR10_STD) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W], standardised per channel."""
    x = torch.as_tensor(x_uint8)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise LmprobeError(f"normalize expects uint8 images [B, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    scale, shift = _affine(tuple(mean), tuple(std), x.device)
    # one pass: (x / 255 - mean) / std = x * scale + shift
    return torch.addcmul(shift, x.permute(0, 3, 1, 2).float(), scale)


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1)
    return (1.0 / (255.0 * s)).to(device, torch.float32), (-m / s).to(device, torch.float32)


def augment(x_uint8: np.ndarray | torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop after zero-padding by `padding` pixels, then a random horizontal flip.

    uint8 [B, H, W, 3] in and out (augment before `normalize`, so padding is black); every
    random draw comes from `generator`, so a seeded generator gives the same batch again.
    """
    x = torch.as_tensor(x_uint8)
    b, h, w, _ = x.shape
    padded = torch.nn.functional.pad(x, (0, 0, padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    flip = torch.rand(b, generator=generator) < 0.5
    rows = oy[:, None] + torch.arange(h)[None, :]
    cols = ox[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    index = [t.to(x.device) for t in (torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :])]
    return padded[index[0], index[1], index[2]]


# ----------------------------------------------------------------------------- subset choice
def rank_keys(seed: int, split: str, tokens: Iterable[str]) -> np.ndarray:
    """A seeded pseudo-random uint64 rank for each token (an image's name or id in its split)."""
    out = []
    for token in tokens:
        digest = hashlib.blake2b(f"{seed}/{split}/{token}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little"))
    return np.array(out, dtype=np.uint64)


def balanced_pick(labels: np.ndarray, ranks: np.ndarray, n: int, classes: Sequence[int], what: str) -> np.ndarray:
    """Positions of the n lowest-ranked items, balanced over classes (label values), sorted."""
    picked = []
    for c, count in zip(classes, per_class_counts(n, len(classes))):
        members = np.flatnonzero(labels == c)
        if len(members) < count:
            raise LmprobeError(f"{what} has {len(members)} images of class {c}, fewer than the {count} "
                               f"a balanced subset of {n} needs: ask for fewer images")
        picked.append(members[np.argsort(ranks[members], kind="stable")[:count]])
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, np.int64)


def resolve_classes(classes: Sequence[str | int] | None, names: Sequence[str]) -> list[int]:
    """Source label values of the requested classes (names or indices), in the order given."""
    if classes is None:
        return list(range(len(names)))
    out = []
    for c in classes:
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < len(names):
            out.append(int(c))
        elif str(c) in names:
            out.append(list(names).index(str(c)))
        else:
            raise LmprobeError(f"class {c!r} is not in this source: its classes are {', '.join(names)}")
    if len(set(out)) != len(out) or len(out) < 2:
        raise LmprobeError(f"classes must name at least two distinct classes, got {list(classes)}")
    return out


def _assemble(source: str, names: Sequence[str], chosen: list[int], parts: dict) -> ImageData:
    """parts[split] = (images, source labels, ids): relabel to 0..k-1 in the order chosen."""
    relabel = np.full(max(chosen) + 1, -1, np.int64)
    relabel[chosen] = np.arange(len(chosen))
    (tx, ty, tid), (vx, vy, vid) = parts["train"], parts["val"]
    return ImageData(train_x=tx, train_y=relabel[ty], val_x=vx, val_y=relabel[vy],
                     class_names=[names[c] for c in chosen], train_ids=tid.astype(np.int64),
                     val_ids=vid.astype(np.int64), source=source)


def _decode(blob: bytes, name: str) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(blob)) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise LmprobeError(f"{name} is {array.shape[1]}x{array.shape[0]}: vision sources need 32x32 images")
    return array


def _stack(images: list[np.ndarray]) -> np.ndarray:
    return np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)


# ----------------------------------------------------------------------------- readers
class _Reader:
    identity: dict

    def load(self, n_train: int, n_val: int, seed: int, classes) -> ImageData:
        raise NotImplementedError


def _reader_for(source: str) -> _Reader:
    if source == "cifar10":
        return _HubReader()
    path = Path(source).expanduser()
    if not path.exists():
        raise LmprobeError(f"data source {source!r} is neither 'synthetic', 'cifar10' nor an existing folder or "
                           f".tar.gz: pass one of those")
    if path.is_dir():
        batches = _find_python_batches(path)
        return _PythonBatchesReader(batches) if batches else _FolderReader(path)
    if tarfile.is_tarfile(path):
        return _PythonArchiveReader(path) if _tar_holds_python_batches(path) else _TarReader(path)
    raise LmprobeError(f"data source {source} is a file but not a tar archive: pass a folder or .tar.gz with "
                       f"train/<class>/ and test/<class>/ images, or cifar-10-python.tar.gz")


def _file_identity(path: Path) -> dict:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _split_of(parts: Sequence[str]) -> str | None:
    """'train' / 'val' for a member path split/<class>/<file>, or None for anything else."""
    if len(parts) != 3 or not parts[2].lower().endswith(IMAGE_SUFFIXES) or parts[2].startswith("."):
        return None
    return "train" if parts[0] in TRAIN_SPLITS else "val" if parts[0] in VAL_SPLITS else None


class _Listing:
    """Every image of a folder-shaped source, by split: (class name, file name) pairs."""

    def __init__(self, entries: dict[str, list[tuple[str, str]]], where: str):
        if not entries["train"]:
            raise LmprobeError(f"{where} has no train/<class>/*.png|jpg images: a folder source needs "
                               f"train/<class>/ and test/<class>/ subfolders")
        self.class_names = sorted({c for c, _ in entries["train"]})
        self.entries = {split: sorted(e) for split, e in entries.items()}
        self.where = where

    def pick(self, split: str, n: int, seed: int, chosen: list[int]) -> tuple[dict[str, int], np.ndarray]:
        """{relative path: source id} of the chosen images, and their source labels."""
        entries = self.entries[split]
        index = {c: i for i, c in enumerate(self.class_names)}
        labels = np.array([index.get(c, -1) for c, _ in entries], dtype=np.int64)
        tokens = [f"{c}/{f}" for c, f in entries]
        if n and not entries:
            raise LmprobeError(f"{self.where} has no test/<class>/ (or val/<class>/) images for validation")
        positions = balanced_pick(labels, rank_keys(seed, split, tokens), n, chosen, f"{self.where} {split}")
        return {tokens[p]: int(p) for p in positions}, labels[positions]


def _collect(listing: _Listing, wanted: dict[str, dict[str, int]], labels: dict, blobs: dict) -> dict:
    parts = {}
    for split in ("train", "val"):
        order = sorted(wanted[split].items(), key=lambda kv: kv[1])
        images = [_decode(blobs[split][token], f"{listing.where}: {token}") for token, _ in order]
        ids = np.array([i for _, i in order], dtype=np.int64)
        parts[split] = (_stack(images), labels[split], ids)
    return parts


class _FolderReader(_Reader):
    def __init__(self, root: Path):
        self.root = root
        entries: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
        for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                for file in class_dir.iterdir():
                    split = _split_of((split_dir.name, class_dir.name, file.name))
                    if split:
                        entries[split].append((class_dir.name, file.name))
        self.listing = _Listing(entries, str(root))
        self.split_dirs = {"train": "train", "val": next((s for s in VAL_SPLITS if (root / s).is_dir()), "test")}
        self.identity = {"folder": str(root.resolve()), "n": {k: len(v) for k, v in entries.items()}}

    def load(self, n_train, n_val, seed, classes):
        chosen = resolve_classes(classes, self.listing.class_names)
        wanted, labels, blobs = {}, {}, {}
        for split, n in (("train", n_train), ("val", n_val)):
            wanted[split], labels[split] = self.listing.pick(split, n, seed, chosen)
            blobs[split] = {t: (self.root / self.split_dirs[split] / t).read_bytes() for t in wanted[split]}
        parts = _collect(self.listing, wanted, labels, blobs)
        return _assemble(f"image folder {self.root}", self.listing.class_names, chosen, parts)


class _TarReader(_Reader):
    """train/<class>/ and test/<class>/ images in a tarball, streamed in one pass.

    A gzip stream cannot seek and a balanced choice needs every name, so while streaming each
    class keeps only its lowest-ranked members' bytes (a bounded heap: at most the class's
    share of the subset, or the whole split's n when classes are not given); memory stays
    below the archive's size. Only images that enter a heap are read.
    """

    def __init__(self, path: Path):
        self.path = path
        self.identity = _file_identity(path)

    def _members(self) -> Iterator[tuple[tarfile.TarFile, tarfile.TarInfo, str, str]]:
        with tarfile.open(self.path, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                parts = [p for p in member.name.split("/") if p not in ("", ".")][-3:]
                split = _split_of(parts)
                if split:
                    yield tar, member, split, f"{parts[1]}/{parts[2]}"

    def load(self, n_train, n_val, seed, classes):
        n = {"train": n_train, "val": n_val}
        by_name = classes is not None and all(isinstance(c, str) for c in classes)  # else known only at the end
        cap = {split: -(-n[split] // len(classes)) if by_name else n[split] for split in n}
        entries: dict[str, list[tuple[str, str]]] = {"train": [], "val": []}
        heaps: dict[tuple[str, str], list] = {}
        for tar, member, split, token in self._members():
            class_name, file_name = token.split("/")
            entries[split].append((class_name, file_name))
            if cap[split] == 0 or (by_name and class_name not in classes):
                continue
            rank = int(rank_keys(seed, split, [token])[0])
            heap = heaps.setdefault((split, class_name), [])
            if len(heap) < cap[split]:
                heapq.heappush(heap, (-rank, token, tar.extractfile(member).read()))
            elif rank < -heap[0][0]:
                heapq.heapreplace(heap, (-rank, token, tar.extractfile(member).read()))
        listing = _Listing(entries, str(self.path))
        chosen = resolve_classes(classes, listing.class_names)
        wanted, labels, blobs = {}, {}, {"train": {}, "val": {}}
        for split in ("train", "val"):
            wanted[split], labels[split] = listing.pick(split, n[split], seed, chosen)
        for (split, _), heap in heaps.items():
            blobs[split].update((token, blob) for _, token, blob in heap if token in wanted[split])
        if any(len(blobs[s]) < len(wanted[s]) for s in blobs):  # rank ties only: read what is missing
            for tar, member, split, token in self._members():
                if token in wanted[split] and token not in blobs[split]:
                    blobs[split][token] = tar.extractfile(member).read()
        parts = _collect(listing, wanted, labels, blobs)
        return _assemble(f"image tarball {self.path.name}", listing.class_names, chosen, parts)


# ----------------------------------------------------------------------------- CIFAR python archive
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_PYTHON_NAMES = (*_TRAIN_BATCHES, "test_batch", "batches.meta")


def _tar_holds_python_batches(path: Path) -> bool:
    with tarfile.open(path, "r:*") as tar:
        for i, member in enumerate(tar):
            if member.isfile():
                return Path(member.name).name in _PYTHON_NAMES
            if i > 20:
                return False
    return False


def _find_python_batches(root: Path) -> dict[str, Path] | None:
    for folder in (root, root / "cifar-10-batches-py"):
        if (folder / "data_batch_1").is_file():
            return {p.name: p for p in folder.iterdir() if p.name in _PYTHON_NAMES}
    return None


def _batches_to_parts(blobs: dict[str, bytes], where: str):
    missing = [n for n in (*_TRAIN_BATCHES, "test_batch") if n not in blobs]
    if missing:
        raise LmprobeError(f"{where} lacks {', '.join(missing)}: pass the complete cifar-10-python archive")
    names = list(CIFAR10_CLASSES)
    if "batches.meta" in blobs:
        meta = load_batch(blobs["batches.meta"], "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", names)]
    splits = {}
    for split, batch_names in (("train", _TRAIN_BATCHES), ("val", ("test_batch",))):
        xs, ys = [], []
        for name in batch_names:
            batch = load_batch(blobs[name], name)
            xs.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        splits[split] = (np.concatenate(xs), np.concatenate(ys))
    return names, splits


def _subset_from_arrays(names, splits, n_train, n_val, seed, classes, source, chw: bool) -> ImageData:
    chosen = resolve_classes(classes, names)
    parts = {}
    for split, n in (("train", n_train), ("val", n_val)):
        x, y = splits[split]
        positions = balanced_pick(y, rank_keys(seed, split, map(str, range(len(y)))), n, chosen, f"{source} {split}")
        images = x[positions]
        parts[split] = (np.ascontiguousarray(images.transpose(0, 2, 3, 1)) if chw else images, y[positions],
                        positions.astype(np.int64))
    return _assemble(source, names, chosen, parts)


class _PythonArchiveReader(_Reader):
    def __init__(self, path: Path):
        self.path = path
        self.identity = _file_identity(path)

    def load(self, n_train, n_val, seed, classes):
        blobs = {}
        with tarfile.open(self.path, "r:*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in _PYTHON_NAMES:
                    blobs[name] = tar.extractfile(member).read()
        names, splits = _batches_to_parts(blobs, str(self.path))
        return _subset_from_arrays(names, splits, n_train, n_val, seed, classes,
                                   f"CIFAR-10 python archive {self.path.name}", chw=True)


class _PythonBatchesReader(_Reader):
    def __init__(self, files: dict[str, Path]):
        self.files = files
        self.identity = {name: _file_identity(p) for name, p in sorted(files.items())}

    def load(self, n_train, n_val, seed, classes):
        blobs = {name: p.read_bytes() for name, p in self.files.items()}
        where = str(next(iter(self.files.values())).parent)
        names, splits = _batches_to_parts(blobs, where)
        return _subset_from_arrays(names, splits, n_train, n_val, seed, classes, f"CIFAR-10 python batches {where}",
                                   chw=True)


# ----------------------------------------------------------------------------- Hub
class _HubReader(_Reader):
    identity = {"hub": HUB_DATASET}

    def load(self, n_train, n_val, seed, classes):
        try:
            import datasets

            dataset = datasets.load_dataset(HUB_DATASET)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:160]
            raise LmprobeError(
                f"cannot load the Hub dataset {HUB_DATASET} ({type(exc).__name__}: {first}); offline, pass a local "
                f"folder or .tar.gz with train/<class>/ and test/<class>/ images, or cifar-10-python.tar.gz, as "
                f"the data source") from None
        names = list(dataset["train"].features["label"].names)
        chosen = resolve_classes(classes, names)
        parts = {}
        for split, hub_split, n in (("train", "train", n_train), ("val", "test", n_val)):
            table = dataset[hub_split]
            labels = np.asarray(table["label"], dtype=np.int64)
            positions = balanced_pick(labels, rank_keys(seed, split, map(str, range(len(labels)))), n, chosen,
                                      f"{HUB_DATASET} {split}")
            rows = table.select(positions.tolist())
            images = [np.asarray(img.convert("RGB"), dtype=np.uint8) for img in rows["img"]]
            parts[split] = (_stack(images), labels[positions], positions.astype(np.int64))
        return _assemble(f"Hub dataset {HUB_DATASET}", names, chosen, parts)
