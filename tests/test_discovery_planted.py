"""Key-free discovery on planted answers, through the real trainer and `lmprobe mine --by repr-target`.

Vision: a small magenta patch in the top-left corner (4 x 4 of 32 x 32 pixels) on 90% of one
class and 15% of another, nothing else planted: the colour keys (top rows, border cluster,
brightness) do not see it, the model's penultimate layer does. Text: four cue tokens that
behave alike, followed by " Yes" or " No" (tests/discovery_corpus.py).
"""

import json
import warnings

import numpy as np
import pytest

PATCH = 4
MAGENTA = np.array([255, 0, 255], np.uint8)
MAJORITY, MINORITY = 0.9, 0.15
PURITY = 0.8

VISION = """
model: {arch: cnn, width: 8}
data: {source: synthetic, n_train: 400, n_val: 100}
optim: {name: gd, lr: 0.05, schedule: constant, grad_clip: null, gd_batches: null}
train: {steps: 80, batch_size: 200, log_every: 2, eval_every: 40, eval_batches: 1, checkpoint_every: 40}
trace: {every: 2, batch_size: 200}
"""


def patched_images(n_train: int, n_val: int, seed: int = 0):
    """Synthetic pattern images with plain random backgrounds (no sky, no grass) and a corner
    patch on MAJORITY of class 0 and MINORITY of class 1; the patch is no key of the data."""
    from vision.images import ImageData, channel_stats
    from vision.synthetic import PATTERNS, _make_split

    splits = []
    for part, n in ((0, n_train), (1, n_val)):
        rng = np.random.default_rng([seed, part])
        x, y, _ = _make_split(n, 4, [], rng)
        for cls, share in ((0, MAJORITY), (1, MINORITY)):
            members = np.flatnonzero(y == cls)
            x[rng.permutation(members)[: int(round(share * len(members)))], :PATCH, :PATCH] = MAGENTA
        splits.append((x, y))
    (tx, ty), (vx, vy) = splits
    mean, std = channel_stats(tx)
    return ImageData(train_x=tx, train_y=ty, val_x=vx, val_y=vy, class_names=list(PATTERNS[:4]),
                     train_ids=np.arange(n_train), val_ids=np.arange(n_val), source="patched corners",
                     mean=mean, std=std)


def has_patch(images: np.ndarray) -> np.ndarray:
    return (images[:, :PATCH, :PATCH] == MAGENTA).all(axis=(1, 2, 3))


@pytest.fixture(scope="module")
def patched_run(tmp_path_factory, one_thread):
    import vision.data
    from lmprobe.train.launch import main

    root = tmp_path_factory.mktemp("patched")
    (root / "patched.yaml").write_text(VISION)
    data = patched_images(400, 100)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vision.data, "load_images", lambda *a, **k: data)
        assert main(["--config", str(root / "patched.yaml"), "--name", "p", "--no-progress",
                     f"out_dir={root}"], domain="vision") == 0
    return root / "p"


def planted_pairs(doc: dict, planted: np.ndarray, targets: set) -> list[tuple[float, float]]:
    """Purities (share of members carrying the planted feature) of each reported pair of two
    groups whose targets are the planted two."""
    found = []
    for pair in doc["pairs"]:
        if pair["kind"] != "pair" or {pair["key_a"].get("target"), pair["key_b"].get("target")} != targets:
            continue
        a, b = doc["groups"][pair["group_a"]], doc["groups"][pair["group_b"]]
        found.append((float(planted[a["members"]].mean()), float(planted[b["members"]].mean())))
    return found


def mine_json(run, *args) -> dict:
    from lmprobe.cli import main

    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["mine", str(run), "--json", *args]) == 0
    return json.loads(out.getvalue())


def test_repr_finds_the_corner_patch_pair_that_no_colour_key_sees(patched_run):
    images = np.load(patched_run / "probe" / "images.npy")
    labels = np.load(patched_run / "probe" / "probe.npz")["target"]
    planted = has_patch(images)
    assert planted[labels == 0].mean() > 0.8 and 0.1 < planted[labels == 1].mean() < 0.2
    for by in ("feature-target", "border-target", "bright-target"):  # what the colour keys report
        pure = [p for p in planted_pairs(mine_json(patched_run, "--by", by), planted, {0, 1}) if min(p) >= PURITY]
        assert not pure, f"--by {by} already finds the patch: {pure}"
    doc = mine_json(patched_run, "--by", "repr-target")
    assert doc["by"] == "repr-target"
    pure = [p for p in planted_pairs(doc, planted, {0, 1}) if min(p) >= PURITY]
    assert pure, f"--by repr-target missed the planted pair: {planted_pairs(doc, planted, {0, 1})}"
    assert (patched_run / "analysis" / "discovery").is_dir()
    assert list((patched_run / "figures").glob("clusters-repr-*.png"))


def test_repr_keys_are_cached_deterministic_and_any_checkpoint_can_be_read(patched_run):
    from lmprobe.discovery.repr_keys import representation_keys
    from lmprobe.domain import open_view

    view = open_view(patched_run)
    first = representation_keys(view, n_clusters=6, seed=1)
    again = representation_keys(view, n_clusters=6, seed=1)
    assert again.info["cached"] and np.array_equal(first.labels, again.labels)
    fresh = representation_keys(open_view(patched_run), n_clusters=6, seed=1)
    assert np.array_equal(first.labels, fresh.labels)
    early = representation_keys(view, step=40, n_clusters=6, seed=1)
    assert early.step == 40 and early.checkpoint.name == "step-000040"
    from lmprobe.errors import LmprobeError

    with pytest.raises(LmprobeError, match="no checkpoint at step 7"):
        representation_keys(view, step=7)


def test_sharp_keys_are_mirror_images_and_enter_the_pair_test(patched_run):
    from lmprobe.discovery.command import found_keys
    from lmprobe.domain import open_view

    wrapped, infos = found_keys(open_view(patched_run), "sharp", directions=2)
    found = wrapped.found
    derivatives = found.extra["derivatives"]
    assert derivatives.shape == (2, 400) and found.info["source"] in ("computed", "recorded alignment")
    side, axis = found.extra["side"], found.extra["axis"]
    for a in np.unique(axis[axis >= 0]):  # the two sides of an axis pull in opposite directions
        plus, minus = (axis == a) & (side == 0), (axis == a) & (side == 1)
        if plus.sum() and minus.sum():
            mean_plus, mean_minus = derivatives[:, plus].mean(1), derivatives[:, minus].mean(1)
            assert mean_plus @ mean_minus < 0
    doc = mine_json(patched_run, "--by", "sharp", "--directions", "2")
    assert doc["by"] == "sharp" and doc["key_names"] == ["sharp", "side"]
    for pair in doc["pairs"]:  # a mirror pair: one axis, both sides
        assert pair["key_a"]["sharp"] == pair["key_b"]["sharp"] and pair["key_a"]["side"] != pair["key_b"]["side"]


TEXT = """
model: {{n_layer: 1, n_head: 2, n_embd: 48}}
data: {{source: {corpus}, tokenizer: bpe-300, block_size: 64, val_fraction: 0.1}}
optim: {{name: adamw, lr: 3.0e-3, warmup_steps: 5, schedule: constant}}
train: {{steps: 120, batch_size: 8, log_every: 50, eval_every: 100000, eval_batches: 1, checkpoint_every: 100000}}
trace: {{every: 2, n_sequences: 48, batch_size: 48}}
"""


@pytest.fixture(scope="module")
def planted_text_run(tmp_path_factory, one_thread):
    from lmprobe.lm.train_cli import main
    from tests.discovery_corpus import write_corpus

    root = tmp_path_factory.mktemp("planted_text")
    corpus = write_corpus(root / "corpus.jsonl")
    (root / "planted.yaml").write_text(TEXT.format(corpus=corpus))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert main(["--config", str(root / "planted.yaml"), "--name", "t", "--no-progress", f"out_dir={root}"]) == 0
    return root / "t"


def test_repr_finds_the_planted_text_feature_split_between_two_targets(planted_text_run):
    from lmprobe.domain import open_view
    from tests.discovery_corpus import PLANTED

    view = open_view(planted_text_run)
    ids = [view.tokenizer.encode(word) for word in (*PLANTED, " Yes", " No")]
    assert all(len(i) == 1 for i in ids), ids
    cue_ids, (yes,), (no,) = [i[0] for i in ids[:4]], ids[4], ids[5]
    keys = view.keys()
    planted = np.isin(keys["feature"], cue_ids)
    doc = mine_json(planted_text_run, "--by", "repr-target", "--clusters", "6")
    pure = [p for p in planted_pairs(doc, planted, {yes, no}) if min(p) >= PURITY]
    assert pure, f"--by repr-target missed the planted pair: {planted_pairs(doc, planted, {yes, no})}"
