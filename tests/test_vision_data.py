"""Vision data: loaders (tarball, folder, CIFAR python archive, Hub offline), synthetic plants, features."""

import io
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from lmprobe.errors import LmprobeError
from vision import data as vision_data
from vision.data import ImageData, augment, load_images, normalize
from vision.features import image_features
from vision.synthetic import make_synthetic

TARBALL = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-images.tar.gz"
needs_tarball = pytest.mark.skipif(not TARBALL.is_file(), reason=f"{TARBALL} not present")


# ----------------------------------------------------------------------------- image tarball
@pytest.fixture(scope="module")
def tar_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vision-cache")


@pytest.fixture(scope="module")
def tar_subset(tar_cache) -> ImageData:
    return load_images(str(TARBALL), n_train=256, n_val=40, seed=0, cache_dir=tar_cache)


@pytest.fixture(scope="module")
def tar_listing():
    """Sorted train/test member names (by the system tar, an independent reader): an image's id
    is its position in its split's listing."""
    names = {"train": [], "test": []}
    listing = subprocess.run(["tar", "tzf", str(TARBALL)], check=True, capture_output=True, text=True).stdout
    for name in listing.split():
        parts = name.split("/")
        if len(parts) == 3 and parts[2]:
            names[parts[0]].append((parts[1], parts[2]))
    return {split: sorted(v) for split, v in names.items()}


@needs_tarball
def test_tarball_subset_is_balanced_and_labelled(tar_subset, tar_listing):
    d = tar_subset
    assert d.train_x.shape == (256, 32, 32, 3) and d.train_x.dtype == np.uint8
    assert d.class_names == list(vision_data.CIFAR10_CLASSES)
    assert sorted(np.bincount(d.train_y, minlength=10)) == [25] * 4 + [26] * 6
    assert np.bincount(d.val_y, minlength=10).tolist() == [4] * 10
    assert len(set(d.train_ids.tolist())) == 256 and np.all(np.diff(d.train_ids) > 0)
    for split, ids, labels in (("train", d.train_ids, d.train_y), ("test", d.val_ids, d.val_y)):
        classes = [tar_listing[split][i][0] for i in ids]
        assert classes == [d.class_names[y] for y in labels]


@needs_tarball
def test_tarball_pixels_are_the_member_images(tar_subset, tar_listing, tmp_path):
    from PIL import Image

    d = tar_subset
    members = [f"train/{'/'.join(tar_listing['train'][i])}" for i in d.train_ids[::50]]
    subprocess.run(["tar", "xzf", str(TARBALL), "-C", str(tmp_path), *members], check=True)
    for member, expected in zip(members, d.train_x[::50]):
        assert np.array_equal(np.asarray(Image.open(tmp_path / member).convert("RGB")), expected)
    assert len(members) == 6


@needs_tarball
def test_tarball_ids_are_stable_and_the_cache_is_reused(tar_subset, tar_cache, monkeypatch):
    assert list(tar_cache.glob("vision/*.npz"))

    def no_reading(*args, **kwargs):
        raise AssertionError("the tarball was read again instead of the cache")

    monkeypatch.setattr(vision_data._TarReader, "load", no_reading)
    again = load_images(str(TARBALL), n_train=256, n_val=40, seed=0, cache_dir=tar_cache)
    assert np.array_equal(again.train_ids, tar_subset.train_ids)
    assert np.array_equal(again.train_x, tar_subset.train_x) and np.array_equal(again.val_y, tar_subset.val_y)
    with pytest.raises(AssertionError, match="read again"):  # a different key is a miss
        load_images(str(TARBALL), n_train=256, n_val=40, seed=1, cache_dir=tar_cache)


@needs_tarball
def test_tarball_class_choice_and_nested_subsets(tar_subset, tar_cache, tar_listing):
    small = load_images(str(TARBALL), n_train=20, n_val=0, seed=0, classes=["ship", "airplane"],
                        cache_dir=tar_cache)
    assert small.class_names == ["ship", "airplane"]
    assert np.bincount(small.train_y).tolist() == [10, 10] and len(small.val_x) == 0
    assert [tar_listing["train"][i][0] for i in small.train_ids] == [small.class_names[y] for y in small.train_y]
    # ranks do not depend on n: the airplanes and ships of the 256-subset contain the 20-subset's
    big = set(tar_subset.train_ids[np.isin(tar_subset.train_y, [0, 8])].tolist())
    assert set(small.train_ids.tolist()) <= big


# ----------------------------------------------------------------------------- other sources
def _fake_python_archive(path: Path, per_batch: int = 20, seed: int = 0):
    """A cifar-10-python.tar.gz lookalike: 5 train batches, a test batch, batches.meta."""
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.permutation(np.arange(per_batch) % 10)]}
    meta = {b"label_names": [n.encode() for n in vision_data.CIFAR10_CLASSES]}
    with tarfile.open(path, "w:gz") as tar:
        for name, obj in [*batches.items(), ("batches.meta", meta)]:
            blob = pickle.dumps(obj)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    train = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    labels = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    return train.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def test_python_archive_loader(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    images, labels = _fake_python_archive(archive)
    d = load_images(str(archive), n_train=30, n_val=10, seed=0, cache_dir=tmp_path / "cache")
    assert np.bincount(d.train_y, minlength=10).tolist() == [3] * 10
    assert np.bincount(d.val_y, minlength=10).tolist() == [1] * 10
    assert np.array_equal(d.train_x, images[d.train_ids])  # ids index the concatenated batches
    assert np.array_equal(d.train_y, labels[d.train_ids])
    with tarfile.open(archive) as tar:  # the extracted folder is the same source
        tar.extractall(tmp_path / "extracted", filter="data")
    same = load_images(str(tmp_path / "extracted"), n_train=30, n_val=10, seed=0, cache_dir=tmp_path / "cache")
    assert np.array_equal(same.train_ids, d.train_ids) and np.array_equal(same.train_x, d.train_x)


def test_image_folder_loader(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    expected = {}
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("cat", "dog"):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(tmp_path / "imgs" / split / cls / f"{i}.png")
                expected[(split, cls, i)] = pixels
    d = load_images(str(tmp_path / "imgs"), n_train=4, n_val=2, seed=3, cache_dir=tmp_path / "cache")
    assert d.class_names == ["cat", "dog"] and np.bincount(d.train_y).tolist() == [2, 2]
    for x, y, i in zip(d.train_x, d.train_y, d.train_ids):  # ids: sorted (class, file) position
        cls = d.class_names[y]
        assert np.array_equal(x, expected[("train", cls, int(i) - 4 * int(y))])


def test_offline_cifar10_fails_with_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LmprobeError) as info:
        load_images("cifar10", n_train=10, n_val=10, cache_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message and "uoft-cs/cifar10" in message and "local folder or .tar.gz" in message


@pytest.mark.parametrize("source, kwargs, match", [
    ("no/such/place", {}, "neither 'synthetic', 'cifar10' nor an existing"),
    ("synthetic", {"n_train": 0}, "n_train >= 1"),
    ("synthetic", {"classes": ["a", "b"]}, "classes cannot be chosen"),
])
def test_bad_sources_give_one_line(source, kwargs, match, tmp_path):
    args = {"n_train": 8, "n_val": 4, **kwargs}
    with pytest.raises(LmprobeError, match=match):
        load_images(source, cache_dir=tmp_path, **args)


def test_too_few_images_for_a_balanced_subset(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    _fake_python_archive(archive, per_batch=10)
    with pytest.raises(LmprobeError, match="fewer than the 6 a balanced subset of 60 needs"):
        load_images(str(archive), n_train=60, n_val=0, seed=0, cache_dir=tmp_path, classes=[0, 1, 2, 3, 4, 5, 6,
                                                                                             7, 8, 9])


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_is_deterministic_for_a_seed():
    a, planted = make_synthetic(200, 40, seed=5)
    b, _ = make_synthetic(200, 40, seed=5)
    c, _ = make_synthetic(200, 40, seed=6)
    for field in ("train_x", "train_y", "train_feature", "val_x", "val_y", "val_feature"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert not np.array_equal(a.train_x, c.train_x)
    assert load_images("synthetic", n_train=200, n_val=40, seed=5).planted == planted
    assert np.array_equal(load_images("synthetic", n_train=200, n_val=40, seed=5).train_x, a.train_x)


def test_synthetic_planted_proportions():
    d, planted = make_synthetic(400, 200, seed=0)
    assert d.n_classes == 4 and np.bincount(d.train_y).tolist() == [100] * 4
    pairs = {(p["feature"], *p["classes"]) for p in planted["pairs"]}
    assert pairs == {(1, 0, 1), (2, 2, 3)} and planted["feature_names"]["1"] == "sky"
    for x_y, feature in ((d.train_y, d.train_feature), (d.val_y, d.val_feature)):
        per_class = np.bincount(x_y)
        for value, major, minor in pairs:
            assert np.sum((feature == value) & (x_y == major)) == round(0.9 * per_class[major])
            assert np.sum((feature == value) & (x_y == minor)) == round(0.15 * per_class[minor])
            assert np.sum((feature == value) & ~np.isin(x_y, [major, minor])) == 0


def test_synthetic_sky_is_a_large_visible_feature():
    d, _ = make_synthetic(400, 0, seed=1)
    top = image_features(d.train_x).keys["top"]
    sky = d.train_feature == 1
    assert np.mean(top[sky] == 9) > 0.95  # "top=blue"
    assert np.mean(top[~sky] == 9) < 0.05


# ----------------------------------------------------------------------------- features, normalise
def test_features_are_deterministic_and_named():
    d, _ = make_synthetic(300, 100, seed=2)
    a, b = image_features(d.train_x, k=6, seed=0), image_features(d.train_x, k=6, seed=0)
    for key in ("top", "border", "bright"):
        assert a.keys[key].dtype == np.int64 and np.array_equal(a.keys[key], b.keys[key])
        assert set(np.unique(a.keys[key])) <= set(a.names[key])
    assert a.names["top"][9] == "top=blue" and a.names["bright"][2] == "bright"
    assert len(a.border_centers) == 6 and all(v.startswith("border=") for v in a.names["border"].values())
    again = image_features(d.train_x[:50], border_centers=a.border_centers)  # val labelled like train
    assert np.array_equal(again.keys["border"], a.keys["border"][:50])


def test_normalize_and_augment():
    d, _ = make_synthetic(64, 0, seed=0)
    x = normalize(d.train_x, d.mean, d.std)
    assert x.shape == (64, 3, 32, 32) and x.dtype == torch.float32
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(x.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    a1 = augment(d.train_x, torch.Generator().manual_seed(0))
    a2 = augment(d.train_x, torch.Generator().manual_seed(0))
    assert torch.equal(a1, a2) and a1.dtype == torch.uint8 and a1.shape == (64, 32, 32, 3)
    assert not torch.equal(a1, torch.as_tensor(d.train_x))
    flips = augment(d.train_x, torch.Generator().manual_seed(1), padding=0)  # no crop: each image or its mirror
    src = torch.as_tensor(d.train_x)
    same, mirrored = (flips == src).flatten(1).all(1), (flips == src.flip(2)).flatten(1).all(1)
    assert torch.all(same | mirrored) and 10 < int(mirrored.sum()) < 54
    with pytest.raises(LmprobeError, match="uint8 images"):
        normalize(torch.zeros(2, 3, 32, 32))


# ----------------------------------------------------------------------------- hostile pickles
class _Payload:
    """A pickle that, when loaded by plain pickle.loads, creates a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _python_batches_folder(folder: Path, poisoned: str, payload) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2}
        (folder / name).write_bytes(pickle.dumps(payload if name == poisoned else batch))


@pytest.mark.parametrize("poisoned", ["data_batch_1", "test_batch"])
def test_a_malicious_python_batch_is_refused_without_running(tmp_path, poisoned):
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    _python_batches_folder(folder, poisoned, {b"data": _Payload(marker), b"labels": []})
    with pytest.raises(LmprobeError, match="refused without loading") as caught:
        load_images(str(folder), n_train=10, n_val=10, seed=0, cache_dir=tmp_path / "cache")
    assert not marker.exists()
    assert "\n" not in str(caught.value) and "touch" in str(caught.value)  # names what it asked for


def test_an_object_array_in_a_batch_is_refused(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    objects = np.empty(3, dtype=object)
    _python_batches_folder(folder, "data_batch_2", {b"data": objects, b"labels": [0, 1, 2]})
    with pytest.raises(LmprobeError, match="refused without loading"):
        load_images(str(folder), n_train=10, n_val=10, seed=0, cache_dir=tmp_path / "cache")


def test_the_cli_says_one_line_for_a_malicious_archive(tmp_path):
    """Through the training entry point: one line on stderr, exit 2, and the payload never runs."""
    marker = tmp_path / "payload-ran"
    folder = tmp_path / "cifar-10-batches-py"
    _python_batches_folder(folder, "data_batch_3", _Payload(marker))
    import os
    import sys

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(root / "cli/train_vision.py"), f"data.source={folder}",
                           "train.steps=1", f"out_dir={tmp_path / 'runs'}", "--name", "evil"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300,
                          env={**os.environ, "LMPROBE_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 2, done.stderr[-2000:]
    assert not marker.exists()
    assert "refused without loading" in done.stderr and "Traceback" not in done.stderr
