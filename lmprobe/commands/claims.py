"""`lmprobe claims`: the paper's claims as numbers over seeds, with 95% intervals and verdicts.

Trains (or reuses) the shipped CPU-scale runs over --seeds seeds through `accelerate launch`
(a killed claims run continues: finished runs are reused, an interrupted one resumes), then
computes each claim's statistic per run with the code `lmprobe events` and `lmprobe mine` use,
and prints one table: claim, model, statistic, mean with a 95% Student-t interval over seeds,
the verdict rule (below, fixed before any run), the verdict. Writes OUT/claims.json,
OUT/claims.md and OUT/claims.png (one panel per claim).

Models: toy-linear, toy-polynomial (--quick: these two, 3 seeds, a few minutes on a 2-core CPU),
text-eos (configs/lm/eos.yaml) and cifar-cnn (configs/vision/cifar-cnn-gd-eos.yaml; CIFAR-10 from
--data, or the Hub, or the synthetic images when offline, said in a line).

The optimizer study (--only optimizers; part of every run without --only; --quick keeps its toy):
toy-polynomial and the CIFAR-10 CNN (configs/vision/cifar-cnn-optimizers.yaml) under full-batch GD,
GD with clipping, GD with batch norm, full-batch Adam, sign descent, SGD and SGD with momentum;
per optimizer the final loss, the sharpness against its own threshold, the swing of GD's top
opposing pair (and its ratio to GD's), the spikes; OUT/optimizers.md and OUT/optimizers.png.
"Damps the swings" (Adam, batch norm, clipping): yes when every seed's swing is below GD's and
the 95% interval of the mean ratio lies below 1; partly when the mean ratio is below 1; no otherwise.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from lmprobe.commands.common import positive
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    from lmprobe.claims.rules import rules_text

    p = subparsers.add_parser("claims", help="the paper's claims over seeds: numbers, intervals, verdicts",
                              description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                              epilog=__doc__.split("\n\n", 1)[1] + "\nVerdict rules:\n" + rules_text())
    p.add_argument("--out", default="runs/claims", help="folder for the runs and the results (default: runs/claims)")
    p.add_argument("--seeds", type=positive, default=3, help="seeds per model (default: 3)")
    p.add_argument("--only", help="comma-separated model, claim and/or study names (e.g. toy-linear,follow or optimizers)")
    p.add_argument("--quick", action="store_true", help="only the models marked quick (the toys)")
    p.add_argument("--data", help="CIFAR-10 for the cifar-cnn model: a folder or archive (default: the Hub)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


STUDY = "optimizers"  # --only name of the optimizer study


def select(only: str | None, quick: bool):
    """(claims models, claims, optimizer-study models) that --only and --quick keep."""
    from lmprobe.claims.optimizers import STUDY_MODELS
    from lmprobe.claims.rules import CLAIMS
    from lmprobe.claims.studies import MODELS

    models = [m for m in MODELS if m.quick or not quick]
    study = [m for m in STUDY_MODELS if m.quick or not quick]
    claims = list(CLAIMS)
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        model_names, claim_names = {m.name for m in MODELS}, {c.name for c in CLAIMS}
        unknown = [n for n in names if n not in model_names | claim_names | {STUDY}]
        if unknown:
            known = sorted(model_names | claim_names | {STUDY})
            raise LmprobeError(f"--only {','.join(unknown)}: not a model, claim or study; use any of {', '.join(known)}")
        if STUDY not in names:
            study = []
        if any(n in model_names for n in names):
            models = [m for m in models if m.name in names]
        elif STUDY in names and not any(n in claim_names for n in names):
            models = []
        if any(n in claim_names for n in names):
            claims = [c for c in claims if c.name in names]
    if not models and not study:
        raise LmprobeError("nothing left to run: --only names none of the models --quick keeps")
    return models, claims, study


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.claims.optimizers import study_specs
    from lmprobe.claims.runs import ensure_runs
    from lmprobe.claims.studies import cifar_source, study

    started = time.monotonic()
    models, claims, study_models = select(args.only, args.quick)
    out = Path(args.out)
    specs, notes = study(models, args.seeds, args.data)
    source, note = cifar_source(args.data)
    if any(m.uses_cifar for m in study_models):
        notes += [note] if note and note not in notes else []
    study_runs = study_specs(study_models, args.seeds, source)
    for line in notes:
        console.print(line, highlight=False, soft_wrap=True)
    run_dirs = ensure_runs(specs + study_runs, out, progress=not args.no_progress)
    data = {"seeds": args.seeds, "quick": args.quick, "notes": notes}
    written = []
    if models:
        written += report_claims(args, console, models, claims, specs, run_dirs, data, started)
    if study_models:
        written += report_study(args, console, study_models, study_runs, run_dirs, data)
    data["wall_s"] = time.monotonic() - started
    from lmprobe.claims.report import write_json

    write_json(out / "claims.json", data)
    for path in [out / "claims.json", *written]:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    console.print(f"claims: {data['wall_s']:.0f} s", highlight=False)
    return 0


def report_claims(args, console, models, claims, specs, run_dirs, data, started) -> list[Path]:
    from lmprobe.claims.evaluate import evaluate, unmeasured_rows
    from lmprobe.claims.measure import measure_run
    from lmprobe.claims.report import FIGURE, figure, markdown, render

    out = Path(args.out)
    numbers: dict[str, list[dict]] = {}
    for spec in specs:
        numbers.setdefault(spec.name, []).append({"seed": spec.seed, **measure_run(run_dirs[spec.key])})
    rows = evaluate(numbers, claims)
    unmeasured = unmeasured_rows() if not args.only else []
    wall = time.monotonic() - started
    title = (f"Claims over {args.seeds} seed(s): {', '.join(m.name for m in models)} "
             f"({'quick' if args.quick else 'full'} set; runs and measures {wall:.0f} s)")
    render(rows, unmeasured, console, title)
    data.update({"models": [m.__dict__ for m in models], "runs": numbers, "claims": [r.to_dict() for r in rows],
                 "unmeasured": unmeasured})
    (out / "claims.md").write_text(markdown(rows, unmeasured, f"# {title}"))
    figure(rows, out / FIGURE)
    return [out / "claims.md", out / FIGURE]


def report_study(args, console, study_models, specs, run_dirs, data) -> list[Path]:
    from lmprobe.claims.optimizers import REFERENCE, VARIANTS, measure_variant, reference_pair, summarise
    from lmprobe.claims.report import STUDY_FIGURE, render_study, study_figure, study_markdown

    out = Path(args.out)
    pairs = {}
    numbers: dict[tuple[str, str], list[dict]] = {}
    for model in study_models:
        for seed in range(args.seeds):
            reference = run_dirs[f"opt-{model.name}-{REFERENCE}-seed{seed}"]
            pairs[model.name, seed] = reference_pair(reference)
        for variant in VARIANTS:
            for seed in range(args.seeds):
                run_dir = run_dirs[f"opt-{model.name}-{variant.name}-seed{seed}"]
                measured = ({"diverged": True} if run_dir is None
                            else {"diverged": False, **measure_variant(run_dir, pairs[model.name, seed])})
                numbers.setdefault((model.name, variant.name), []).append({"seed": seed, **measured})
    rows = summarise(numbers)
    title = f"Optimizer study over {args.seeds} seed(s): {', '.join(m.name for m in study_models)}"
    render_study(rows, console, title)
    diverged = [f"{m}/{v} seed {s['seed']}" for (m, v), seeds in numbers.items() for s in seeds if s["diverged"]]
    if diverged:
        console.print(f"diverged (no numbers): {', '.join(diverged)}", highlight=False)
    data["optimizers"] = {"models": [m.__dict__ for m in study_models], "variants": [v.__dict__ for v in VARIANTS],
                          "reference_pairs": {f"{m}/seed{s}": None if p is None else p[2] for (m, s), p in pairs.items()},
                          "runs": {f"{m}/{v}": seeds for (m, v), seeds in numbers.items()},
                          "rows": [r.to_dict() for r in rows], "diverged": diverged}
    (out / "optimizers.md").write_text(study_markdown(rows, f"# {title}", diverged))
    study_figure(rows, out / STUDY_FIGURE)
    return [out / "optimizers.md", out / STUDY_FIGURE]
