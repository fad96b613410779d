"""Vision training throughput: our model wrappers against the same math in plain PyTorch.

For each arch, images per second of
  * one GD step: a full batch accumulated over micro-batches, then one optimizer step;
  * one SGD step: one mini-batch, forward, backward, step;
for each contender, timed in alternating rounds (the order flips every round) and reported as
medians, so drift in machine load hits every contender alike.

Contenders (CONTENDERS): "wrapper" = vision.models.build_model + logits + cross-entropy;
"plain" = the same network written inline here, loaded with the wrapper's weights (checked:
identical logits), called directly; "trainer" = one step through lmprobe's Trainer on a
VisionTask with images of the same shape and count. Figures in BENCHMARKS.md.

    python benchmarks/vision_throughput.py [--archs mlp,cnn] [--rounds 5] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from vision.models import build_model, logits

# CPU-scale sizes: the small EoS nets at their literature widths, the big ones narrowed.
ARCH_SPECS = {
    "mlp": {"width": 200},
    "cnn": {"width": 32},
    "resnet18": {"width": 16},
    "vgg11": {"width": 16},
    "vgg11_bn": {"width": 16},
    "vit": {"width": 64, "n_layer": 4, "n_head": 4},
}


# ----------------------------------------------------------------------------- plain models
class PlainMLP(nn.Module):
    def __init__(self, n_classes, width):
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(3072, width), nn.Linear(width, width), nn.Linear(width, n_classes)

    def forward(self, x):
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.out(torch.tanh(self.fc2(x)))


class PlainCNN(nn.Module):
    def __init__(self, n_classes, width):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1)
        self.out = nn.Linear(width * 64, n_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        x = F.max_pool2d(F.relu(self.c2(x)), 2)
        return self.out(x.flatten(1))


class PlainVGG(nn.Module):
    def __init__(self, n_classes, width, bn):
        super().__init__()
        self.bn, self.convs, self.norms, c_in = bn, nn.ModuleList(), nn.ModuleList(), 3
        self.plan = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")
        for item in self.plan:
            if item != "M":
                self.convs.append(nn.Conv2d(c_in, width * item, 3, padding=1, bias=not bn))
                if bn:
                    self.norms.append(nn.BatchNorm2d(width * item))
                c_in = width * item
        self.out = nn.Linear(c_in, n_classes)

    def forward(self, x):
        i = 0
        for item in self.plan:
            if item == "M":
                x = F.max_pool2d(x, 2)
                continue
            x = self.convs[i](x)
            x = F.relu(self.norms[i](x) if self.bn else x)
            i += 1
        return self.out(x.flatten(1))

    def ordered_state(self):  # the wrapper interleaves conv and bn: match its order
        items = []
        for i, conv in enumerate(self.convs):
            items += [(f"convs.{i}.{k}", v) for k, v in conv.state_dict().items()]
            if self.bn:
                items += [(f"norms.{i}.{k}", v) for k, v in self.norms[i].state_dict().items()]
        return items + [(f"out.{k}", v) for k, v in self.out.state_dict().items()]


class PlainBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.down is None else self.down(x)))


class PlainResNet(nn.Module):
    def __init__(self, n_classes, width):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        blocks, c_in = [], width
        for i in range(4):
            for j in range(2):
                blocks.append(PlainBlock(c_in, width * 2**i, 2 if i > 0 and j == 0 else 1))
                c_in = width * 2**i
        self.blocks = nn.Sequential(*blocks)
        self.out = nn.Linear(c_in, n_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.out(x.mean((2, 3)))


class PlainViT(nn.Module):
    def __init__(self, n_classes, width, n_layer, n_head, patch=4):
        super().__init__()
        self.heads = n_head
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, (32 // patch) ** 2 + 1, width))
        self.patch = nn.Conv2d(3, width, patch, patch)
        self.layers = nn.ModuleList()
        for _ in range(n_layer):
            self.layers.append(nn.ModuleDict({
                "q": nn.Linear(width, width), "k": nn.Linear(width, width), "v": nn.Linear(width, width),
                "o": nn.Linear(width, width), "ln1": nn.LayerNorm(width, eps=1e-12),
                "ln2": nn.LayerNorm(width, eps=1e-12), "fc1": nn.Linear(width, 4 * width),
                "fc2": nn.Linear(4 * width, width)}))
        self.ln = nn.LayerNorm(width, eps=1e-12)
        self.out = nn.Linear(width, n_classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], 1) + self.pos
        b, t, d = x.shape
        for layer in self.layers:
            h = layer["ln1"](x)
            q, k, v = (layer[n](h).view(b, t, self.heads, d // self.heads).transpose(1, 2) for n in "qkv")
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, -1)  # eager: double backward
            x = x + layer["o"]((att @ v).transpose(1, 2).reshape(b, t, d))
            x = x + layer["fc2"](F.gelu(layer["fc1"](layer["ln2"](x))))
        return self.out(self.ln(x)[:, 0])


def plain_model(arch: str, n_classes: int, spec: dict) -> nn.Module:
    width = spec["width"]
    if arch == "mlp":
        return PlainMLP(n_classes, width)
    if arch == "cnn":
        return PlainCNN(n_classes, width)
    if arch in ("vgg11", "vgg11_bn"):
        return PlainVGG(n_classes, width, bn=arch == "vgg11_bn")
    if arch == "resnet18":
        return PlainResNet(n_classes, width)
    return PlainViT(n_classes, width, spec["n_layer"], spec["n_head"])


def copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Positional copy (the plain nets register tensors in the wrapper's order); shapes must agree."""
    theirs = list(src.state_dict().values())
    mine = dst.ordered_state() if hasattr(dst, "ordered_state") else list(dst.state_dict().items())
    assert len(theirs) == len(mine), (len(theirs), len(mine))
    with torch.no_grad():
        for (name, d), s in zip(mine, theirs):
            assert d.shape == s.shape, (name, d.shape, s.shape)
            d.copy_(s)


# ----------------------------------------------------------------------------- contenders
def make_step(forward: Callable, model: nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> Callable:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
    model.train()

    def step(kind: str) -> int:
        optimizer.zero_grad(set_to_none=True)
        if kind == "gd":
            n = args.gd_batch
            for start in range(0, n, args.micro):
                xb, yb = x[start:start + args.micro], y[start:start + args.micro]
                (F.cross_entropy(forward(model, xb), yb, reduction="sum") / n).backward()
        else:
            n = args.sgd_batch
            F.cross_entropy(forward(model, x[:n]), y[:n]).backward()
        optimizer.step()
        return n

    return step


def wrapper_contender(arch, spec, x, y, args, seed=0):
    torch.manual_seed(seed)
    return make_step(logits, build_model(arch, args.n_classes, **spec), x, y, args)


def plain_contender(arch, spec, x, y, args, seed=0):
    torch.manual_seed(seed)
    reference = build_model(arch, args.n_classes, **spec).eval()
    model = plain_model(arch, args.n_classes, spec).eval()
    copy_weights(reference, model)
    with torch.no_grad():  # the same math: identical logits before any step
        assert torch.allclose(logits(reference, x[:8]), model(x[:8]), atol=1e-5), arch
    return make_step(lambda m, xb: m(xb), model, x, y, args)


def trainer_contender(arch, spec, x, y, args, seed=0):
    """One optimiser step through lmprobe's Trainer on a VisionTask (Accelerate, uint8 batches
    normalised in the loss, the sampler, clipping off), on images of the same shape and count."""
    import numpy as np
    from accelerate import Accelerator

    from lmprobe.config import OptimConfig, TrainConfig
    from lmprobe.train.loop import LoopConfig, Trainer
    from vision.config import VisionConfig, VisionModelConfig, VisionTraceConfig
    from vision.data import ImageData
    from vision.task import VisionTask

    torch.manual_seed(seed)
    n = len(x)
    pixels = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    data = ImageData(pixels, y.numpy().astype(np.int64), pixels[:8], y[:8].numpy().astype(np.int64),
                     [str(c) for c in range(args.n_classes)], np.arange(n), np.arange(8), "benchmark")
    trainers = {}
    for kind, batch in (("gd", args.micro), ("sgd", args.sgd_batch)):
        cfg = VisionConfig(model=VisionModelConfig(arch=arch, **spec),
                           optim=OptimConfig(name=kind, lr=1e-3, grad_clip=None, schedule="constant"),
                           train=TrainConfig(steps=10**9, batch_size=batch), trace=VisionTraceConfig(every=0))
        cfg.optim.gd_batches = args.gd_batch // args.micro
        task = VisionTask(cfg, data=data)
        trainer = Trainer(task, LoopConfig(cfg.optim, cfg.train, cfg.trace, cfg.sharpness), Path(tempfile.mkdtemp()),
                          Accelerator(cpu=True), show_progress=False)
        trainer._build(resume=False)
        trainers[kind] = (trainer, args.gd_batch if kind == "gd" else batch)
    counter = {"step": 0}

    def step(kind: str) -> int:
        trainer, images = trainers[kind]
        trainer._train_step(counter["step"])
        trainer._clip_and_step(measure=False)
        counter["step"] += 1
        return images

    return step


CONTENDERS = {"wrapper": wrapper_contender, "plain": plain_contender, "trainer": trainer_contender}


def measure(arch: str, args) -> dict[tuple[str, str], float]:
    spec = ARCH_SPECS[arch]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(max(args.gd_batch, args.sgd_batch), 3, 32, 32, generator=g)
    y = torch.randint(0, args.n_classes, (len(x),), generator=g)
    steps = {name: make(arch, spec, x, y, args) for name, make in CONTENDERS.items()}
    rates: dict[tuple[str, str], list[float]] = {(n, k): [] for n in steps for k in ("gd", "sgd")}
    for name in steps:  # warm-up
        steps[name]("gd"), steps[name]("sgd")
    order = list(steps)
    for r in range(args.rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            for kind in ("gd", "sgd"):
                start, images = time.perf_counter(), 0
                for _ in range(args.steps):
                    images += steps[name](kind)
                rates[(name, kind)].append(images / (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in rates.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCH_SPECS))
    parser.add_argument("--gd-batch", type=int, default=256)
    parser.add_argument("--micro", type=int, default=64)
    parser.add_argument("--sgd-batch", type=int, default=64)
    parser.add_argument("--n-classes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"GD: {args.gd_batch} images in micro-batches of {args.micro}; SGD: batches of {args.sgd_batch}; "
          f"{args.threads} thread(s); medians of {args.rounds} alternating rounds of {args.steps} steps")
    names = list(CONTENDERS)
    header = (["arch", "spec"] + [f"{n} {k} img/s" for k in ("gd", "sgd") for n in names]
              + ["trainer/plain gd", "sgd"])
    print(" | ".join(header))
    for arch in args.archs.split(","):
        med = measure(arch, args)
        spec = ",".join(f"{k}={v}" for k, v in ARCH_SPECS[arch].items())
        cells = [f"{med[(n, k)]:.0f}" for k in ("gd", "sgd") for n in names]
        ratios = [f"{med[('trainer', k)] / med[('plain', k)]:.2f}" for k in ("gd", "sgd")]
        print(" | ".join([arch, spec, *cells, *ratios]), flush=True)


if __name__ == "__main__":
    main()
