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

(c) products to a certified relative error of 1e-3 (residual <= 1e-3 |theta|, so |theta - lambda|
    <= 1e-3 |theta| for some eigenvalue lambda) for the top eigenvalue: lmprobe Lanczos cold,
    PyHessian-style power iteration (first product whose residual certifies 1e-3, at most 100),
    scipy.sparse.linalg.eigsh (ARPACK, which="LA", tol 1e-3: the same residual criterion) on the same
    operator behind a float64 LinearOperator, on three problems from |lambda_min|/lambda_max ~ 1 to
    ~30; and lmprobe warm: SharpnessTracker measuring every step of a short Adam run.
(d) Hutch++ against Hutchinson at equal products.

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

from lmprobe.hessian import (  # noqa: E402
    DenseOperator,
    HessianOperator,
    SharpnessTracker,
    hutch_plus_plus_trace,
    hutchinson_trace,
    lanczos,
    measurement_mode,
    power_iteration,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "hessian_scripts"))
import hessian_problems as problems  # noqa: E402

ACCURACY = 1e-3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--embd", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--train-steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds for (a)")
    parser.add_argument("--reference-iters", type=int, default=60)
    parser.add_argument("--power-products", type=int, default=100,
                        help="products for the power-iteration run that ignores its stopping rule")
    parser.add_argument("--track-steps", type=int, default=12, help="training steps measured by the tracker")
    parser.add_argument("--track-lr", type=float, default=1e-4, help="Adam lr of the tracked training run")
    parser.add_argument("--trace-products", type=int, default=30)
    parser.add_argument("--trace-repeats", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
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


def power_to_certified(operator, max_products: int = 100) -> tuple[int | None, float]:
    """PyHessian's power iteration, run until its residual certifies ACCURACY (or max_products)."""
    result = power_iteration(operator, max_iter=1, tol=0.0)  # first product, to get the start right
    v = result.eigenvectors[:, 0]
    for n in range(1, max_products + 1):
        hv = operator.matvec(v).to(torch.float64)
        v64 = v.to(torch.float64)
        estimate = float(v64 @ hv)
        residual = float((hv - estimate * v64).norm())
        if residual <= ACCURACY * abs(estimate):
            return n, estimate
        v = (hv / hv.norm()).to(operator.dtype)
    return None, estimate


def eigsh_products(operator) -> tuple[int, float]:
    """Products ARPACK (scipy eigsh, which="LA", tol 1e-3) takes on a float64 wrapper of `operator`."""
    import numpy as np
    from scipy.sparse.linalg import LinearOperator as ScipyOperator, eigsh

    def matvec(x):
        product = operator.matvec(torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(-1)).to(operator.dtype))
        return product.to(torch.float64).numpy()

    start = operator.n_products
    wrapped = ScipyOperator((operator.dim, operator.dim), matvec=matvec, dtype=np.float64)
    v0 = np.random.default_rng(0).standard_normal(operator.dim)
    values = eigsh(wrapped, k=1, which="LA", tol=ACCURACY, v0=v0, return_eigenvectors=False)
    return operator.n_products - start, float(values[-1])


def certified_rows(name: str, make_operator: Callable[[], HessianOperator]) -> list[str]:
    cold = lanczos(make_operator(), k=1, tol=ACCURACY, return_eigenvectors=False)
    bottom = lanczos(make_operator(), k=1, which="SA", tol=ACCURACY, return_eigenvectors=False)
    power_n, power_value = power_to_certified(make_operator())
    arpack_n, arpack_value = eigsh_products(make_operator())
    ratio = -bottom.eigenvalues[0] / cold.eigenvalues[0]
    return [name, f"{cold.eigenvalues[0]:.5g}", f"{bottom.eigenvalues[0]:.5g}", f"{ratio:.1f}",
            f"{cold.n_products}{'' if cold.converged else ' (not converged)'}",
            f"{cold.error_bounds[0] / abs(cold.eigenvalues[0]):.1e}",
            str(power_n) if power_n else "> 100", f"{power_value:.5g}", str(arpack_n), f"{arpack_value:.5g}"]


def tracked_run(model: nn.Module, batch: torch.Tensor, args: argparse.Namespace) -> dict:
    """SharpnessTracker every step of a short Adam run (plain Hessian), against cold Lanczos."""
    tracker = SharpnessTracker(tol=ACCURACY)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.track_lr)
    products, worst, cold_products, mismatches = [], 0.0, [], 0
    for _ in range(args.track_steps):
        report = tracker.measure(model, lm_loss, [batch], lr=args.track_lr)
        products.append(report["n_products"])
        worst = max(worst, report["error_bounds"][0] / abs(report["sharpness"]))
        cold = lanczos(HessianOperator(model, lm_loss, [batch]), k=1, tol=ACCURACY, return_eigenvectors=False)
        cold_products.append(cold.n_products)
        if abs(cold.eigenvalues[0] - report["sharpness"]) > cold.error_bounds[0] + report["error_bounds"][0]:
            mismatches += 1
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model, batch).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    warm = products[1:]
    return {"products": products, "warm_mean": sum(warm) / len(warm), "worst": worst,
            "cold_mean": sum(cold_products) / len(cold_products), "mismatches": mismatches}


def trace_rows(model: nn.Module, batch: torch.Tensor, args: argparse.Namespace) -> list[list[str]]:
    rows = []
    generator = torch.Generator().manual_seed(args.seed)
    q, _ = torch.linalg.qr(torch.randn(2000, 2000, generator=generator, dtype=torch.float64))
    decaying = DenseOperator(q @ torch.diag(1.0 / torch.arange(1, 2001, dtype=torch.float64) ** 1.5) @ q.T)
    for name, run in [
        ("Hutchinson", lambda seed: hutchinson_trace(HessianOperator(model, lm_loss, [batch]),
                                                     n_probes=args.trace_products, seed=seed)),
        ("Hutch++", lambda seed: hutch_plus_plus_trace(HessianOperator(model, lm_loss, [batch]),
                                                       n_products=args.trace_products, seed=seed)),
        ("Hutchinson, dense 2000x2000, eigenvalues 1/i^1.5",
         lambda seed: hutchinson_trace(decaying, n_probes=args.trace_products, seed=seed)),
        ("Hutch++, dense 2000x2000, eigenvalues 1/i^1.5",
         lambda seed: hutch_plus_plus_trace(decaying, n_products=args.trace_products, seed=seed)),
    ]:
        estimates = [run(1000 * r) for r in range(args.trace_repeats)]
        values = torch.tensor([e.estimate for e in estimates], dtype=torch.float64)
        rows.append([name, str(estimates[0].n_products), f"{float(values.mean()):.5g}",
                     f"{sum(e.stderr for e in estimates) / len(estimates):.3g}",
                     f"{float(values.std()):.3g}" if len(estimates) > 1 else "-"])
    return rows


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
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
    console.print("(c) products to a certified 1e-3: three problems ...")
    wrong_mlp, wrong_mlp_batches, _ = problems.confidently_wrong_mlp()
    wrong_gpt2, wrong_gpt2_batches = problems.confidently_wrong_gpt2(dtype=torch.float32)
    certified = [
        certified_rows(f"GPT-2 above ({n_params:,} params, float32)", lambda: HessianOperator(model, lm_loss, [batch])),
        certified_rows("tiny GPT-2, confidently wrong (1,080 params, float32)",
                       lambda: HessianOperator(wrong_gpt2, problems.lm_loss, wrong_gpt2_batches, train=False)),
        certified_rows("MLP, confidently wrong (123 params, float64)",
                       lambda: HessianOperator(wrong_mlp, problems.classification_loss, wrong_mlp_batches)),
    ]
    console.print(f"(c) tracker during {args.track_steps} Adam steps (lr {args.track_lr:g}) ...")
    tracked = tracked_run(model, batch, args)
    console.print(f"(d) trace: {args.trace_repeats} repeats x {args.trace_products} products each ...")
    traces = trace_rows(model, batch, args)
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
    certified_header = ("problem", "lambda_max", "lambda_min", "-lambda_min / lambda_max", "lmprobe cold: products",
                        "its certified rel. error", "power iteration: products to certify its value", "power value",
                        "eigsh (ARPACK): products", "eigsh value")
    table_c = Table(title="(c) products to a certified 1e-3 relative error, top eigenvalue")
    for column in certified_header:
        table_c.add_column(column)
    for row in certified:
        table_c.add_row(*row)
    console.print(table_c)
    tracked_line = (
        f"lmprobe warm (SharpnessTracker, every step of {args.track_steps} Adam steps at lr {args.track_lr:g} on the "
        f"GPT-2 above): products per measurement {tracked['products']}, mean {tracked['warm_mean']:.2f} after the "
        f"first (cold Lanczos on the same steps: mean {tracked['cold_mean']:.1f}); worst certified relative error "
        f"{tracked['worst']:.1e}; steps where warm and cold disagree beyond both bounds: {tracked['mismatches']}."
    )
    console.print(tracked_line)
    table_d = Table(title=f"(d) trace, {args.trace_products} products per estimate, {args.trace_repeats} seeds")
    for column in ("estimator", "products", "mean estimate", "mean reported stderr", "std over seeds"):
        table_d.add_column(column)
    for row in traces:
        table_d.add_row(*row)
    console.print(table_d)

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
            "",
            "(c) Products to a certified relative error of 1e-3 for the top eigenvalue (a residual <= 1e-3 |theta|: "
            "some eigenvalue lies within 1e-3 |theta| of theta). lmprobe cold: Lanczos, tol 1e-3 (residual on each "
            "wanted value and settled over 2 products). Power iteration: first product whose residual certifies "
            "1e-3 (it converges to the largest-magnitude eigenvalue, so where lambda_min dominates it never "
            "certifies the top one). eigsh: scipy ARPACK, which=LA, tol 1e-3, on a float64 LinearOperator around "
            "the same operator. lambda_min from Lanczos which=SA at tol 1e-3.",
            "",
            "| " + " | ".join(certified_header) + " |",
            "|---|" + "---:|" * (len(certified_header) - 1),
            *["| " + " | ".join(row) + " |" for row in certified],
            "",
            f"- {tracked_line}",
            "",
            f"(d) Trace of the GPT-2 Hessian above and of a dense matrix with a decaying spectrum (exact trace "
            f"{float((1.0 / torch.arange(1, 2001, dtype=torch.float64) ** 1.5).sum()):.4f}), {args.trace_products} "
            f"products per estimate, {args.trace_repeats} seeds: Hutchinson (Rademacher probes) and Hutch++ (Meyer et al. 2021: a third of the products sketch the "
            "top of the spectrum, a third take its trace exactly, a third probe the deflated rest).",
            "",
            "| estimator | products | mean estimate | mean reported stderr | std over seeds |",
            "|---|---:|---:|---:|---:|",
            *["| " + " | ".join(row) + " |" for row in traces],
        ]
        command = "HF_HUB_OFFLINE=1 python benchmarks/hessian.py --write  # one torch thread by default"
        write_section("Hessian", lines, command)
        console.print("wrote the Hessian section of BENCHMARKS.md")


if __name__ == "__main__":
    main()
