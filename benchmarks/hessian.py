"""Hessian benchmark: cost of one Hessian-vector product, and Lanczos against power iteration.

One run, one model, one fixed batch (a small GPT-2 after a few Adam steps on a synthetic bigram
language, so the Hessian is not that of a random initialisation):

(a) time of one Hessian-vector product over time of one gradient, for double backward (what
    lmprobe.hessian uses) with the gradient graph cached across products (its default with one
    batch per process) and rebuilt for every product, and torch.func forward-over-reverse
    (jvp of grad, graph rebuilt each product: its fair comparison is the rebuilt row). Methods are timed in interleaved rounds and
    the median is kept, so drift in machine load hits all of them alike.
(b) products and seconds to get the top eigenvalue to 1e-3 relative accuracy, against a tightly
    converged Lanczos reference: our Lanczos (its residual stopping rule at tol 1e-3) and
    PyHessian-style power iteration (tol 1e-3, at most 100 products).

    HF_HUB_OFFLINE=1 python benchmarks/hessian.py --write
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from torch import nn  # noqa: E402
from torch.func import functional_call, grad, jvp  # noqa: E402

from lmprobe.hessian import HessianOperator, lanczos, measurement_mode, power_iteration  # noqa: E402

ACCURACY = 1e-3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--embd", type=int, default=128)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for (a)")
    parser.add_argument("--reference-iters", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write", action="store_true", help="record the figures in BENCHMARKS.md")
    return parser.parse_args()


def bigram_batches(n: int, args: argparse.Namespace, generator: torch.Generator) -> list[torch.Tensor]:
    """Token sequences from a fixed sparse random bigram chain: learnable structure, no corpus."""
    successors = torch.randint(0, args.vocab, (args.vocab, 4), generator=generator)
    batches = []
    for _ in range(n):
        tokens = torch.empty(args.batch, args.seq, dtype=torch.long)
        tokens[:, 0] = torch.randint(0, args.vocab, (args.batch,), generator=generator)
        for t in range(1, args.seq):
            choice = torch.randint(0, 4, (args.batch,), generator=generator)
            tokens[:, t] = successors[tokens[:, t - 1], choice]
        batches.append(tokens)
    return batches


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    return model(input_ids=batch, labels=batch).loss


def build(args: argparse.Namespace) -> tuple[nn.Module, torch.Tensor]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    config = GPT2Config(
        n_layer=args.layers, n_embd=args.embd, n_head=args.heads, vocab_size=args.vocab, n_positions=args.seq,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config)
    generator = torch.Generator().manual_seed(args.seed)
    train = bigram_batches(args.train_steps, args, generator)
    (measure,) = bigram_batches(1, args, generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for batch in train:
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model, batch).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, measure


def timers(model: nn.Module, batch: torch.Tensor) -> dict[str, Callable[[], object]]:
    params = [p for p in model.parameters() if p.requires_grad]
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    vector = torch.randn(sum(p.numel() for p in params), generator=torch.Generator().manual_seed(1))
    rebuilt = HessianOperator(model, lm_loss, [batch], cache_graph=False)
    cached = HessianOperator(model, lm_loss, [batch])  # the default with one batch per process

    class Loss(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return lm_loss(self.model, tokens)

    wrapper = Loss()
    primals = {f"model.{n}": p.detach() for n, p in zip(names, params)}
    tangents = dict(zip(primals, (v.view_as(p) for v, p in zip(torch.split(vector, [p.numel() for p in params]), params))))

    def gradient() -> object:
        return torch.autograd.grad(lm_loss(model, batch), params)

    def forward_over_reverse() -> object:
        with measurement_mode(model):
            return jvp(grad(lambda p: functional_call(wrapper, p, (batch,))), (primals,), (tangents,))[1]

    return {
        "gradient": gradient,
        "HVP, double backward, gradient graph cached (default, one batch)": lambda: cached.matvec(vector),
        "HVP, double backward, graph rebuilt each product": lambda: rebuilt.matvec(vector),
        "HVP, torch.func forward-over-reverse": forward_over_reverse,
    }


def time_interleaved(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    for function in functions.values():  # warm-up (and the cached graph's one-off build)
        function()
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def first_within(history: list[list[float]], reference: float) -> int | None:
    """Products after which the estimate is first within ACCURACY of the reference."""
    for i, values in enumerate(history):
        if abs(values[0] - reference) <= ACCURACY * abs(reference):
            return i + 1
    return None


def main() -> None:
    args = parse_args()
    console = Console()
    load_before = os.getloadavg()[0]
    console.print(f"building GPT-2 ({args.layers} layers, n_embd {args.embd}, vocab {args.vocab}) "
                  f"and taking {args.train_steps} Adam steps ...")
    model, batch = build(args)
    n_params = sum(p.numel() for p in model.parameters())

    console.print(f"(a) timing, {args.rounds} interleaved rounds ...")
    seconds = time_interleaved(timers(model, batch), args.rounds)
    gradient_seconds = seconds["gradient"]

    console.print("(b) reference: Lanczos, tight tolerance ...")
    reference_run = lanczos(HessianOperator(model, lm_loss, [batch]), k=1, tol=1e-6,
                            max_iter=args.reference_iters, return_eigenvectors=False)
    reference = reference_run.eigenvalues[0]
    console.print("(b) Lanczos and power iteration ...")
    ours = lanczos(HessianOperator(model, lm_loss, [batch]), k=1, tol=ACCURACY, return_eigenvectors=False)
    power = power_iteration(HessianOperator(model, lm_loss, [batch]), tol=ACCURACY, max_iter=100)
    load_after = os.getloadavg()[0]

    cost = Table(title=f"(a) one Hessian-vector product vs one gradient ({n_params:,} parameters, "
                       f"batch {args.batch}x{args.seq})")
    cost.add_column("computation")
    cost.add_column("seconds", justify="right")
    cost.add_column("x gradient", justify="right")
    for name, value in seconds.items():
        cost.add_row(name, f"{value:.3f}", f"{value / gradient_seconds:.2f}")

    solvers = Table(title=f"(b) top eigenvalue to {ACCURACY:g} relative (reference {reference:.6g}, "
                          f"residual {reference_run.residuals[0]:.2g})")
    for column in ("solver", "products", "seconds", "relative error", "products to 1e-3", "converged"):
        solvers.add_column(column, justify="left" if column == "solver" else "right")
    rows = []
    for name, result in [("Lanczos (tol 1e-3, residual rule)", ours), ("power iteration (tol 1e-3, max 100)", power)]:
        error = abs(result.eigenvalues[0] - reference) / abs(reference)
        reached = first_within(result.history, reference)
        row = [name, str(result.n_products), f"{result.seconds:.1f}", f"{error:.1e}",
               str(reached) if reached else "not reached", str(result.converged)]
        rows.append(row)
        solvers.add_row(*row)
    ratio = power.n_products / ours.n_products
    console.print(cost)
    console.print(solvers)
    console.print(f"power iteration / Lanczos products: {ratio:.1f}x")

    if args.write:
        from record import write_section  # benchmarks/record.py, beside this script

        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                   "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
        lines = [
            f"Machine: {os.cpu_count()}-core CPU ({cpu}), no GPU, {torch.get_num_threads()} torch threads; "
            f"shared machine, 1-min load average {load_before:.1f} before and {load_after:.1f} after the run.",
            f"Model: GPT-2, {args.layers} layers, n_embd {args.embd}, {args.heads} heads, vocab {args.vocab}, "
            f"{n_params:,} parameters, after {args.train_steps} Adam steps on a synthetic bigram language; "
            f"one fixed batch of {args.batch}x{args.seq} tokens; float32; Hessian over all parameters; "
            "(b) uses the operator's defaults (gradient graph cached, as for any single batch per process).",
            "",
            "(a) One Hessian-vector product / one gradient (median of interleaved rounds; target <= 2.5):",
            "",
            "| computation | seconds | x gradient |",
            "|---|---:|---:|",
            *[f"| {name} | {value:.3f} | {value / gradient_seconds:.2f} |" for name, value in seconds.items()],
            "",
            f"(b) Top eigenvalue to {ACCURACY:g} relative accuracy; reference {reference:.6g} from Lanczos "
            f"(tol 1e-6, {reference_run.n_products} products, residual {reference_run.residuals[0]:.2g}). "
            "\"products to 1e-3\" counts products until the running estimate is first within 1e-3 of the "
            "reference (target: Lanczos at most a third of power iteration):",
            "",
            "| solver | products | seconds | relative error | products to 1e-3 | converged |",
            "|---|---:|---:|---:|---:|---|",
            *["| " + " | ".join(row) + " |" for row in rows],
            "",
            f"Power iteration used {ratio:.1f}x the products of Lanczos.",
        ]
        command = "HF_HUB_OFFLINE=1 python benchmarks/hessian.py --write"
        write_section("Hessian", lines, command)
        console.print("wrote the Hessian section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
