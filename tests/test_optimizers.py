"""The optimizers and switches the optimizer study needs: sign descent (and signum), full-batch
Adam, batch norm in the toy MLP and the CIFAR CNN, and each optimizer's threshold."""

from __future__ import annotations

import pytest
import torch

from lmprobe.config import OptimConfig, is_full_batch
from lmprobe.errors import LmprobeError
from lmprobe.hessian.thresholds import optimizer_threshold
from lmprobe.train.optim import SignDescent, build_optimizer


def test_sign_descent_moves_every_coordinate_by_lr_against_the_gradient_sign():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0, 0.5]))
    p.grad = torch.tensor([1e-6, -50.0, 0.0, 3.0])
    SignDescent([p], lr=0.1).step()
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -1.9, 3.0, 0.4]))


def test_signum_follows_the_sign_of_the_momentum_not_of_the_gradient():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = SignDescent([p], lr=1.0, momentum=0.9)
    p.grad = torch.tensor([10.0])
    opt.step()  # m = 10: step -1
    p.grad = torch.tensor([-1.0])
    opt.step()  # m = 0.9 * 10 - 0.1 = 8.9 > 0: still -1, though the gradient turned
    assert p.item() == pytest.approx(-2.0)
    p.grad = torch.tensor([-100.0])
    opt.step()  # m = 8.01 - 10 < 0: now +1
    assert p.item() == pytest.approx(-1.0)


def test_build_optimizer_and_thresholds_per_name():
    model = torch.nn.Linear(3, 1)
    sign = build_optimizer(model, OptimConfig(name="sign", lr=0.01))
    assert isinstance(sign, SignDescent) and optimizer_threshold(sign) is None  # no curvature threshold
    heavy = build_optimizer(model, OptimConfig(name="sgd", lr=0.01, momentum=0.9))
    assert optimizer_threshold(heavy).value == pytest.approx(3.8 / 0.01)
    adam = build_optimizer(model, OptimConfig(name="adamw", lr=0.01))
    assert optimizer_threshold(adam).preconditioned and optimizer_threshold(adam).value == pytest.approx(3800)


def test_full_batch_is_gd_unless_asked():
    assert is_full_batch(OptimConfig(name="gd")) and not is_full_batch(OptimConfig(name="adamw"))
    assert is_full_batch(OptimConfig(name="adamw", full_batch=True))
    assert not is_full_batch(OptimConfig(name="gd", full_batch=False))


def test_toy_mlp_batch_norm_saves_and_loads(tmp_path):
    from toy.models import build_model, load_model

    model = build_model("mlp", 3, 8, 2, "tanh", 1.0, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules()) == 2
    model.save_pretrained(tmp_path)
    loaded = load_model(tmp_path).eval()
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded(x), model.eval()(x))
    plain = build_model("mlp", 3, 8, 2, "tanh", 1.0)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in plain.modules())
    with pytest.raises(LmprobeError, match="batch_norm is for arch: mlp"):
        build_model("linear", 3, 8, 2, "tanh", 1.0, batch_norm=True)


def test_cnn_batch_norm_saves_and_loads(tmp_path):
    from vision.models import build_model, load_model, save_model

    model = build_model("cnn", 10, width=4, batch_norm=True)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 2
    save_model(model, tmp_path)
    loaded = load_model(tmp_path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x))


def test_full_batch_adam_steps_on_the_whole_set_over_micro_batches(tmp_path):
    """optim.full_batch: true makes Adam accumulate the fixed GD subset (8 micro-batches of 32 here):
    the same steps as Adam on one batch of all 256 examples; without it, 32-example mini-batches."""
    from safetensors.torch import load_file

    from tests.test_toy import CONFIGS, train

    def final(name, *overrides):
        run = train(CONFIGS / "polynomial.yaml", tmp_path, name, "optim.name=adamw", "optim.lr=0.01", "train.steps=3",
                    "train.checkpoint_every=3", "sharpness.every=0", "trace.every=0", *overrides)
        return load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))

    whole = final("whole", "train.batch_size=256")
    accumulated = final("accumulated", "train.batch_size=32", "optim.full_batch=true")
    mini = final("mini", "train.batch_size=32")
    for key in whole:
        torch.testing.assert_close(accumulated[key], whole[key], rtol=1e-4, atol=1e-6)
    assert any(not torch.allclose(mini[key], whole[key], rtol=1e-4, atol=1e-6) for key in whole)
