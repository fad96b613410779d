"""Vision models: every arch trains, saves and loads exactly, and has a working double backward."""

import json

import pytest
import torch
import torch.nn.functional as F

from lmprobe.errors import LmprobeError
from vision.models import ARCHS, build_model, load_model, logits, n_classes_of, save_model

TINY = {
    "resnet18": {"width": 4},
    "vgg11": {"width": 4},
    "vgg11_bn": {"width": 4},
    "vit": {"width": 16, "n_layer": 1, "n_head": 2},
    "mlp": {"width": 16},
    "cnn": {"width": 4},
}
MODEL_TYPES = {"resnet18": "lmprobe-resnet", "vgg11": "lmprobe-vgg", "vgg11_bn": "lmprobe-vgg", "vit": "vit",
               "mlp": "lmprobe-mlp", "cnn": "lmprobe-cnn"}
N_CLASSES = 3


def _batch(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.arange(n) % N_CLASSES


def _tiny(arch):
    torch.manual_seed(0)
    return build_model(arch, N_CLASSES, **TINY[arch])


def test_archs_are_the_documented_ones():
    assert set(ARCHS) == set(TINY)


@pytest.mark.parametrize("arch", ARCHS)
def test_arch_trains_and_round_trips(arch, tmp_path, one_thread):
    model = _tiny(arch)
    x, y = _batch()
    assert logits(model, x).shape == (8, N_CLASSES)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(logits(model, x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses

    save_model(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == MODEL_TYPES[arch]
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "ckpt")
    assert type(loaded) is type(model) and not loaded.training
    assert n_classes_of(loaded) == N_CLASSES
    model.eval()
    x_new, _ = _batch(seed=1)
    with torch.no_grad():
        assert torch.equal(logits(model, x_new), logits(loaded, x_new))
    if arch == "vit":  # the attention path with a double backward survives the round trip
        assert loaded.config._attn_implementation == "eager"


@pytest.mark.parametrize("arch", ["cnn", "vit"])
def test_a_gathered_state_dict_is_saved_instead_of_the_models_own(arch, tmp_path):
    """Sharded training (FSDP) hands the checkpoint writer the full weights gathered from every
    process; they, not the local module's, are what the folder holds."""
    model = _tiny(arch)
    gathered = {name: torch.full_like(t, 0.25) for name, t in model.state_dict().items()}
    save_model(model, tmp_path / "ckpt", state_dict=gathered)
    loaded = load_model(tmp_path / "ckpt")
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, gathered[name]), name


@pytest.mark.parametrize("arch", ARCHS)
def test_hessian_vector_product_is_finite(arch, one_thread):
    model = _tiny(arch)
    model.train()  # batch norm in batch-statistics mode: the harder case for double backward
    x, y = _batch()
    params = [p for p in model.parameters() if p.requires_grad]
    loss = F.cross_entropy(logits(model, x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    g = torch.Generator().manual_seed(2)
    v = [torch.randn(p.shape, generator=g) for p in params]
    hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, v)), params)
    flat = torch.cat([h.reshape(-1) for h in hv])
    assert torch.isfinite(flat).all() and flat.abs().sum() > 0


def test_hessian_vector_product_matches_finite_differences(one_thread):
    """A smooth net (tanh MLP) in float64: Hv equals the central difference of gradients."""
    torch.manual_seed(0)
    model = build_model("mlp", N_CLASSES, width=8).double()
    x, y = _batch(4)
    x = x.double()
    params = list(model.parameters())

    def grad_at(shift):
        with torch.no_grad():
            for p, s in zip(params, shift):
                p.add_(s)
        g = torch.autograd.grad(F.cross_entropy(logits(model, x), y), params)
        with torch.no_grad():
            for p, s in zip(params, shift):
                p.sub_(s)
        return torch.cat([t.reshape(-1) for t in g])

    g = torch.Generator().manual_seed(3)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    norm = torch.sqrt(sum((t * t).sum() for t in v))
    v = [t / norm for t in v]
    grads = torch.autograd.grad(F.cross_entropy(logits(model, x), y), params, create_graph=True)
    hv = torch.cat([h.reshape(-1) for h in torch.autograd.grad(sum((a * b).sum() for a, b in zip(grads, v)),
                                                               params)])
    eps = 1e-4
    fd = (grad_at([eps * t for t in v]) - grad_at([-eps * t for t in v])) / (2 * eps)
    assert (hv - fd).norm() < 1e-6 * hv.norm() and hv.norm() > 0


def test_width_options_scale_the_models():
    wide, narrow = build_model("vgg11", 10), build_model("vgg11", 10, width=8)
    assert sum(p.numel() for p in wide.parameters()) > 50 * sum(p.numel() for p in narrow.parameters())
    bn = build_model("vgg11_bn", 10, width=8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in narrow.modules())
    standard = build_model("resnet18", 10)  # the CIFAR ResNet-18 has 11.17M parameters
    assert abs(sum(p.numel() for p in standard.parameters()) - 11_173_962) < 1000


@pytest.mark.parametrize("call, match", [
    (lambda: build_model("alexnet", 10), "unknown vision arch 'alexnet'"),
    (lambda: build_model("cnn", 10, widht=3), "widht not known for cnn"),
    (lambda: build_model("mlp", 10, activation="gelu"), "unknown activation 'gelu'"),
    (lambda: build_model("mlp", 1), "n_classes must be at least 2"),
])
def test_bad_model_options_give_one_line(call, match):
    with pytest.raises(LmprobeError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


def test_load_model_needs_a_saved_model(tmp_path):
    with pytest.raises(LmprobeError, match="no saved model"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(LmprobeError, match="model_type 'gpt2'"):
        load_model(tmp_path)
