"""Hessian benchmark: cost of one Hessian-vector product, and Lanczos against power iteration.

One run, one model, one fixed batch (a small GPT-2 after a few Adam steps on a synthetic bigram
language, so the Hessian is not that of a random initialisation):

(a) time of one Hessian-vector product over time of one gradient, for double backward (what
    lmprobe.hessian uses) with the gradient graph cached across products (its default with one
    batch per process) and rebuilt for every product, and torch.func forward-over-reverse
    (jvp of grad, graph rebuilt each product: its fair comparison is the rebuilt row). Methods are
    timed in interleaved rounds and the fastest round of each is kept, so drift and contention on a
    shared machine hit all of them alike and distort the ratios least.
(b) products and seconds to get the top eigenvalue to 1e-3 relative accuracy, against a tightly
    converged Lanczos reference: our Lanczos (its residual stopping rule at tol 1e-3) and
    PyHessian-style power iteration (tol 1e-3, at most 100 products), for the largest eigenvalue
    (the sharpness) and for the largest-magnitude one (what power iteration converges to).

    HF_HUB_OFFLINE=1 python benchmarks/hessian.py --write
"""

from __future__ import annotations

import argparse
import os
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
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds for (a)")
    parser.add_argument("--reference-iters", type=int, default=60)
    parser.add_argument("--power-products", type=int, default=100,
                        help="products for the power-iteration run that ignores its stopping rule")
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
    return {name: min(values) for name, values in samples.items()}


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

    # Two targets: the sharpness (largest eigenvalue, what measure_sharpness reports) and the
    # largest-magnitude eigenvalue (what power iteration converges to); they differ when the most
    # negative eigenvalue is larger in size than the most positive one.
    targets = {"largest (sharpness)": "LA", "largest magnitude": "LM"}
    references, ours = {}, {}
    for target, which in targets.items():
        console.print(f"(b) {target}: reference Lanczos (tol 1e-6), then Lanczos at tol {ACCURACY:g} ...")
        references[target] = lanczos(HessianOperator(model, lm_loss, [batch]), k=1, which=which, tol=1e-6,
                                     max_iter=args.reference_iters, return_eigenvectors=False)
        ours[target] = lanczos(HessianOperator(model, lm_loss, [batch]), k=1, which=which, tol=ACCURACY,
                               return_eigenvectors=False)
    console.print(f"(b) power iteration (tol {ACCURACY:g}, at most 100 products) ...")
    power = power_iteration(HessianOperator(model, lm_loss, [batch]), tol=ACCURACY, max_iter=100)
    console.print(f"(b) power iteration run on past its rule ({args.power_products} products) ...")
    power_long = power_iteration(HessianOperator(model, lm_loss, [batch]), tol=0.0, max_iter=args.power_products)
    load_after = os.getloadavg()[0]

    cost = Table(title=f"(a) one Hessian-vector product vs one gradient ({n_params:,} parameters, "
                       f"batch {args.batch}x{args.seq})")
    cost.add_column("computation")
    cost.add_column("seconds", justify="right")
    cost.add_column("x gradient", justify="right")
    for name, value in seconds.items():
        cost.add_row(name, f"{value:.3f}", f"{value / gradient_seconds:.2f}")

    solvers = Table(title=f"(b) top eigenvalue to {ACCURACY:g} relative accuracy")
    columns = ("target (reference)", "solver", "products", "seconds", "estimate", "rel. error", "products to 1e-3")
    for column in columns:
        solvers.add_column(column, justify="left" if column in columns[:2] else "right")
    rows = []
    for target in targets:
        reference = references[target].eigenvalues[0]
        label = f"{target} ({reference:.6g})"
        for name, result in [(f"Lanczos (tol {ACCURACY:g})", ours[target]),
                             (f"power iteration (tol {ACCURACY:g}, max 100)", power),
                             (f"power iteration, no stopping rule ({args.power_products} products)", power_long)]:
            error = abs(result.eigenvalues[0] - reference) / abs(reference)
            reached = first_within(result.history, reference)
            rows.append([label, name, str(result.n_products), f"{result.seconds:.1f}",
                         f"{result.eigenvalues[0]:.6g}", f"{error:.1e}", str(reached) if reached else "never"])
            solvers.add_row(*rows[-1])
    console.print(cost)
    console.print(solvers)
    summary = []
    for target in targets:
        reference = references[target].eigenvalues[0]
        lanczos_reached = first_within(ours[target].history, reference)
        power_reached = first_within(power_long.history, reference)
        power_says = (f"power iteration needed {power_reached}" if power_reached else
                      f"power iteration was not there after {power_long.n_products}")
        ratio = f" ({power_reached / lanczos_reached:.1f}x)" if power_reached and lanczos_reached else ""
        summary.append(
            f"{target}: Lanczos within 1e-3 after {lanczos_reached} products (its rule stopped it at "
            f"{ours[target].n_products}); {power_says}{ratio}; PyHessian's rule stopped power iteration after "
            f"{power.n_products} products at relative error {abs(power.eigenvalues[0] - reference) / abs(reference):.1e}."
        )
    for line in summary:
        console.print(line)

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
            f"(a) One Hessian-vector product / one gradient (fastest of {args.rounds} interleaved rounds; target <= 2.5):",
            "",
            "| computation | seconds | x gradient |",
            "|---|---:|---:|",
            *[f"| {name} | {value:.3f} | {value / gradient_seconds:.2f} |" for name, value in seconds.items()],
            "",
            f"(b) Top eigenvalue to {ACCURACY:g} relative accuracy. References from Lanczos at tol 1e-6 "
            + ", ".join(f"({target}: {r.n_products} products, residual {r.residuals[0]:.1g})"
                        for target, r in references.items())
            + ". \"products to 1e-3\" counts products until the running estimate is first within 1e-3 of "
            "the reference; power iteration (PyHessian's method) converges to the largest-magnitude "
            "eigenvalue, so it is scored against both. Target: Lanczos at most a third of the products. "
            "Products are the load-independent cost (each is one HVP, identical for both solvers); seconds are "
            "wall-clock on a shared machine and move with other users' load.",
            "",
            "| target (reference) | solver | products | seconds | estimate | rel. error | products to 1e-3 |",
            "|---|---|---:|---:|---:|---:|---:|",
            *["| " + " | ".join(row) + " |" for row in rows],
            "",
            *[f"- {line}" for line in summary],
        ]
        command = "HF_HUB_OFFLINE=1 python benchmarks/hessian.py --write"
        write_section("Hessian", lines, command)
        console.print("wrote the Hessian section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
