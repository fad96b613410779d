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
    p.add_argument("--only", help="comma-separated model and/or claim names (e.g. toy-linear,follow)")
    p.add_argument("--quick", action="store_true", help="only the models marked quick (the toys)")
    p.add_argument("--data", help="CIFAR-10 for the cifar-cnn model: a folder or archive (default: the Hub)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def select(only: str | None, quick: bool):
    from lmprobe.claims.rules import CLAIMS
    from lmprobe.claims.studies import MODELS

    models = [m for m in MODELS if m.quick or not quick]
    claims = list(CLAIMS)
    if only:
        names = [n.strip() for n in only.split(",") if n.strip()]
        known = {m.name for m in MODELS} | {c.name for c in CLAIMS}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise LmprobeError(f"--only {','.join(unknown)}: not a model or claim; use any of {', '.join(sorted(known))}")
        if any(n in {m.name for m in MODELS} for n in names):
            models = [m for m in models if m.name in names]
        if any(n in {c.name for c in CLAIMS} for n in names):
            claims = [c for c in claims if c.name in names]
    if not models:
        raise LmprobeError("no model left to run: --only names none of the models --quick keeps")
    return models, claims


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.claims.evaluate import evaluate, unmeasured_rows
    from lmprobe.claims.measure import measure_run
    from lmprobe.claims.report import FIGURE, figure, markdown, render, write_json
    from lmprobe.claims.runs import ensure_runs
    from lmprobe.claims.studies import study

    started = time.monotonic()
    models, claims = select(args.only, args.quick)
    out = Path(args.out)
    specs, notes = study(models, args.seeds, args.data)
    for note in notes:
        console.print(note, highlight=False, soft_wrap=True)
    run_dirs = ensure_runs(specs, out, progress=not args.no_progress)
    numbers: dict[str, list[dict]] = {}
    for spec in specs:
        numbers.setdefault(spec.name, []).append({"seed": spec.seed, **measure_run(run_dirs[spec.key])})
    rows = evaluate(numbers, claims)
    unmeasured = unmeasured_rows() if not args.only else []
    wall = time.monotonic() - started
    title = (f"Claims over {args.seeds} seed(s): {', '.join(m.name for m in models)} "
             f"({'quick' if args.quick else 'full'} set; {wall:.0f} s)")
    render(rows, unmeasured, console, title)
    data = {"models": [m.__dict__ for m in models], "seeds": args.seeds, "quick": args.quick, "wall_s": wall,
            "notes": notes, "runs": {m: s for m, s in numbers.items()}, "claims": [r.to_dict() for r in rows],
            "unmeasured": unmeasured}
    write_json(out / "claims.json", data)
    (out / "claims.md").write_text(markdown(rows, unmeasured, f"# {title}"))
    figure(rows, out / FIGURE)
    for name in ("claims.json", "claims.md", FIGURE):
        console.print(f"wrote {out / name}", highlight=False, soft_wrap=True)
    return 0
