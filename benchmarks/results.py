"""The embedded benchmark behind docs/results.md: one command regenerates its numbers and plots.

    python benchmarks/results.py --stage sweep   # the small lr x ramp sweep that picks each method's settings
    python benchmarks/results.py                 # the benchmark itself (--stage main), then docs/

The embedded GPT-2 on the embedded Shakespeare corpus, pruned to 90/95/98% by every method at
one equal budget of optimizer steps (same data order, steps, optimizer, evaluation):

    dense (fine-tuning only), magnitude, wanda, sparsegpt (one-shot at step 0, then fine-tuned with
    the mask frozen), gmp (gradual magnitude), movement (movement pruning, Sanh et al. 2020), and
    pdp with the shipped defaults; gmp, movement and pdp again with distillation from the starting
    model (``--distill``) at 95 and 98%; PDP's three extensions once at 90%.

Every method runs 3 seeds at every sparsity (dense 3).  Each method's learning rate and ramp
length come from the same small sweep (``--stage sweep``, at 95%, seed 0: the learning rate
halved and doubled around its centre, and for gradual methods the ramp at 1/4 and 3/4 of the
budget), so the baselines get the same care as PDP; distilled runs take their method's settings.

Each run is one `pdp-gpt2 train` subprocess with one CPU thread; ``--jobs`` of them
run at once (2 on a 2-core machine). A finished run with the same flags is reused, so
an interrupted benchmark continues where it stopped. Afterwards the script writes the
report (`pdp-gpt2 report`) into <out>/report, copies its PNGs (+ slides.pdf) into docs/,
every run into docs/results.csv, and rewrites the block between the GENERATED markers
of docs/results.md. The text around that block is written by hand.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/results.py) -->", "<!-- END GENERATED -->"

# Variant -> train flags.  "pdp" is PDP as `pdp-gpt2 train` ships it (tau 0.1 annealed to 0.001),
# spelled out so the row keeps its meaning if the defaults move.
VARIANTS = {
    "dense": {"method": "dense"},
    "magnitude": {"method": "magnitude"},
    "wanda": {"method": "wanda"},
    "sparsegpt": {"method": "sparsegpt"},
    "gmp": {"method": "gmp"},
    "movement": {"method": "movement"},
    "pdp": {"method": "pdp", "tau": 0.1, "tau_schedule": "exp", "tau_final": 0.001},
}
# Distillation from the starting model: movement pruning's setting (alpha 0.9, T 2; Sanh et al. 2020).
DISTILL = {"distill": 0.9, "distill_temperature": 2.0}
DISTILLED = ("gmp", "movement", "pdp")  # each also runs as "<method>+distill" at DISTILL_SPARSITIES
DISTILL_SPARSITIES = (0.95, 0.98)
EXTENSIONS = {"pdp+improved": {"improved_masking": True}, "pdp+q8": {"quantize": True, "bits": 8},
              "pdp+maskopt": {"custom_optimizer": True}}
# Extra rows at 95%, 3 seeds, with their method's settings; none is any method's competitor ("vs best
# other"): Wanda ranking the whole tensor instead of each output row, as benchmark v3's Wanda did
# (that one scored every block on the dense model's outputs; this one calibrates block by block).
AT_95 = {"wanda+tensor": {"wanda_groups": "tensor"}}
ONE_SHOT = ("magnitude", "wanda", "sparsegpt")  # no ramp to sweep
# The sweep's centres: v2's winners; movement and sparsegpt start from gmp's and magnitude's.
CENTRES = {
    "dense": {"learning_rate": 1e-3},
    "magnitude": {"learning_rate": 2e-3},
    "wanda": {"learning_rate": 2e-3},  # not swept separately: magnitude's (the same one-shot-then-frozen regime)
    "sparsegpt": {"learning_rate": 2e-3},
    "gmp": {"learning_rate": 1e-3, "ramp": 0.5},
    "movement": {"learning_rate": 1e-3, "ramp": 0.5},
    "pdp": {"learning_rate": 1e-3, "ramp": 0.5},
}
# Chosen by `--stage sweep` (v3, 95%, seed 0; docs/results.md shows the table): per variant, the
# learning rate and the sparsity ramp (fraction of the budget) of its best point.  Changed from the
# centre: dense 1e-3 -> 5e-4 (90.92 against 93.2 and 97.57), movement 1e-3 -> 5e-4 (112.65 against
# 113.94; its ramp 0.75 at 1e-3 gave 112.65 as well, 1e-4 behind).  Every other centre won.
TUNED = {**CENTRES, "dense": {"learning_rate": 5e-4}, "movement": {"learning_rate": 5e-4, "ramp": 0.5}}
# The sweep: each swept variant at its centre (a main run), the learning rate halved and doubled,
# and for gradual methods the ramp at 1/4 and 3/4 of the budget.
SWEPT = ("dense", "magnitude", "sparsegpt", "gmp", "movement", "pdp")


def sweep_points() -> dict:
    points = {}
    for v in SWEPT:
        if TUNED[v] != CENTRES[v]:  # the centre is no longer a main run: keep it in the table
            points[f"{v}-centre"] = (v, {})
        lr = CENTRES[v]["learning_rate"]
        for f in (0.5, 2.0):
            points[f"{v}-lr{lr * f:g}"] = (v, {"learning_rate": lr * f})
        if v not in ONE_SHOT and v != "dense":
            for r in (0.25, 0.75):
                points[f"{v}-ramp{r:g}"] = (v, {"ramp": r})
    return points


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", choices=("all", "sweep", "main"), default="all",
                   help="all: the settings sweep and the benchmark in one pool (default); or either alone")
    p.add_argument("--out", default="runs/results-v3", help="where the runs and the report go")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.9, 0.95, 0.98])
    p.add_argument("--seeds", type=int, default=3, help="seeds for every method at every sparsity")
    p.add_argument("--dense_seeds", type=int, default=3)
    p.add_argument("--max_steps", type=int, default=300, help="optimizer steps per run (the equal budget)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    p.add_argument("--sweep_sparsity", type=float, default=0.95)
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="any other train flag for every run, e.g. --set eval_split=validation")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="docs directory to update ('' to skip)")
    p.add_argument("--only", nargs="+", default=None, metavar="RUN", help="run only these planned runs (by name)")
    p.add_argument("--dry_run", action="store_true", help="list the runs and exit")
    p.add_argument("--rows_from", default=None, metavar="CSV",
                   help="with --only: take every other planned run's row from this results.csv (runs whose code "
                        "gives the same result bit for bit), so the table and CSV are whole; the plots and slides "
                        "need every run directory and are left as they are")
    return p.parse_args(argv)


def common_flags(args) -> dict:
    flags = {"model": "embedded", "dataset": "shakespeare", "eval_split": "test", "max_steps": args.max_steps,
             "log_interval": max(1, args.max_steps // 60),
             # Non-overlapping windows: the whole test split at half the default cost.
             "eval_stride": 128}
    for item in args.set:
        k, _, v = item.partition("=")
        flags[k.strip().lstrip("-")] = v
    return flags


def base_variant(variant: str) -> str:
    """'pdp+improved' -> 'pdp', 'gmp+distill' -> 'gmp': the method whose settings a variant takes."""
    return variant.split("+", 1)[0]


def run_flags(args, variant: str, sparsity: float | None, seed: int, tuned: dict | None = None,
              extra: dict | None = None) -> dict:
    b = base_variant(variant)
    base = VARIANTS[b]
    if variant.endswith("+distill"):
        extra = {**DISTILL, **(extra or {})}
    t = dict(TUNED[b], **(tuned or {}))
    flags = {**common_flags(args), **base, **(extra or {}), "seed": seed, "learning_rate": t["learning_rate"]}
    if sparsity is not None:
        flags["sparsity"] = sparsity
    if "ramp" in t:
        flags["warmup_steps"] = max(1, round(t["ramp"] * args.max_steps))
    return flags


def tag(s: float) -> str:
    return f"s{round(100 * s)}"


def plan_main(args) -> list[tuple[str, dict]]:
    runs = [(f"dense-seed{k}", run_flags(args, "dense", None, k)) for k in range(args.dense_seeds)]
    for s in sorted(args.sparsities, reverse=True):  # the hardest target first: its numbers matter most
        for v in VARIANTS:
            if v == "dense":
                continue
            for k in range(args.seeds):
                runs.append((f"{v}-{tag(s)}-seed{k}", run_flags(args, v, s, k)))
        if any(abs(s - x) < 1e-9 for x in DISTILL_SPARSITIES):
            for v in DISTILLED:
                for k in range(args.seeds):
                    runs.append((f"{v}+distill-{tag(s)}-seed{k}", run_flags(args, f"{v}+distill", s, k)))
        if abs(s - 0.95) < 1e-9:
            runs += [(f"{v}-{tag(s)}-seed{k}", run_flags(args, v, s, k, extra=AT_95[v]))
                     for v in AT_95 for k in range(args.seeds)]
        if abs(s - 0.9) < 1e-9:
            runs += [(f"{v}-{tag(s)}-seed0", run_flags(args, v, s, 0, extra=EXTENSIONS[v])) for v in EXTENSIONS]
    return runs


def plan_sweep(args) -> list[tuple[str, dict]]:
    runs = []
    for name, (v, over) in sweep_points().items():
        tuned = {k: over[k] for k in ("learning_rate", "ramp") if k in over}
        extra = {k: x for k, x in over.items() if k not in tuned}
        tuned = {**CENTRES[v], **tuned}  # points around the centre, whatever the sweep then chose
        runs.append((name, run_flags(args, v, None if v == "dense" else args.sweep_sparsity, 0, tuned, extra)))
    return runs


def shipped_variant() -> str | None:
    """The benchmark variant whose PDP flags equal what `pdp-gpt2 train` ships by default."""
    from pdp_gpt2.pdp.config import PDPConfig

    d = PDPConfig()
    f = VARIANTS["pdp"]
    return "pdp" if (d.tau, d.tau_schedule, d.tau_final) == (f["tau"], f["tau_schedule"], f.get("tau_final")) else None


def run_all(batches: list[tuple[Path, list[tuple[str, dict]]]], jobs: int) -> list[list[dict]]:
    """Run every (out_dir, runs) batch, ``jobs`` runs at a time across all batches; return each
    batch's rows (its sweep.csv)."""
    from pdp_gpt2.train.sweep import run_trials

    os.environ["OMP_NUM_THREADS"] = "1"  # one thread per run: `jobs` runs share the cores without contention
    if jobs > 1:  # run in parallel first; the sequential pass below then only collects (all cached)
        items = [(out, r) for out, runs in batches for r in runs]

        from pdp_gpt2.train.sweep_dir import finished_with

        def one(item):
            out, (name, params) = item
            if finished_with(out / name, params):
                return  # reused as it is
            pool_dir = out / f".pool-{name}"
            run_trials([(name, params)], pool_dir)
            src = pool_dir / name
            if src.is_dir() and (src / "summary.json").is_file() and not (out / name / "summary.json").is_file():
                shutil.rmtree(out / name, ignore_errors=True)
                shutil.move(str(src), str(out / name))
            shutil.rmtree(pool_dir, ignore_errors=True)

        with ThreadPoolExecutor(jobs) as pool:
            list(pool.map(one, items))
    return [run_trials(runs, out) for out, runs in batches]


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def parse_name(trial: str) -> tuple[str, float | None, str]:
    """'gmp+distill-s95-seed1' -> ('gmp+distill', 0.95, 'seed1'); 'dense-seed0' -> ('dense', None, 'seed0')."""
    parts = trial.split("-")
    rest = parts[-1]
    sp = next((i for i, p in enumerate(parts) if p.startswith("s") and p[1:].isdigit()), None)
    if sp is None:
        return "-".join(parts[:-1]), None, rest
    return "-".join(parts[:sp]), int(parts[sp][1:]) / 100, "-".join(parts[sp + 1:])


def mean_sd(xs: list[float]) -> str:
    if not xs:
        return "-"
    if len(xs) == 1:
        return f"{xs[0]:.2f}"
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def groups(rows: list[dict]) -> dict:
    """(variant, sparsity) -> list of ok rows."""
    g: dict = {}
    for r in rows:
        if r.get("status") == "ok" and _num(r.get("perplexity")) is not None:
            v, s, _ = parse_name(r["trial"])
            g.setdefault((v, s), []).append(r)
    return g


ALL_VARIANTS = [*VARIANTS, *AT_95, *(f"{v}+distill" for v in DISTILLED), *EXTENSIONS]


def _ppl(g, v, s) -> list[float]:
    return [_num(r["perplexity"]) for r in g.get((v, s), [])]


def best_other(g, s, distilled: bool) -> tuple[str, list[float]] | None:
    """The method with the lowest mean perplexity at sparsity s other than PDP (among the distilled
    runs when ``distilled``): PDP's real competitor at that point."""
    names = [f"{v}+distill" for v in DISTILLED if v != "pdp"] if distilled else \
        [v for v in VARIANTS if v not in ("pdp", "dense")]
    scored = [(statistics.mean(_ppl(g, v, s)), v) for v in names if _ppl(g, v, s)]
    if not scored:
        return None
    v = min(scored)[1]
    return v, _ppl(g, v, s)


def results_table(rows: list[dict], sparsities: list[float]) -> list[str]:
    g = groups(rows)
    dense = _ppl(g, "dense", None)
    dense_mean = statistics.mean(dense) if dense else None
    out = ["| sparsity | method | test ppl (hard), mean ± sd | seeds | vs best other | worst soft-to-hard gap |"
           " vs dense fine-tuned |", "|---|---|---:|---|---:|---:|---:|"]
    if dense:
        out.append(f"| 0% | dense | {mean_sd(dense)} | {', '.join(f'{x:.2f}' for x in dense)} | - | - | - |")
    for s in sparsities:
        for v in ALL_VARIANTS:
            ppl = _ppl(g, v, s)
            if not ppl:
                continue
            rs = g[(v, s)]
            gaps = [_num(r.get("soft_hard_gap")) for r in rs if _num(r.get("soft_hard_gap")) is not None]
            peer = best_other(g, s, v.endswith("+distill"))
            vs = f"{statistics.mean(ppl) / statistics.mean(peer[1]):.3f} ({peer[0]})" if peer else "-"
            vs_dense = f"{100 * (statistics.mean(ppl) / dense_mean - 1):+.1f}%" if dense_mean else "-"
            gap = f"{100 * max(gaps):+.2f}%" if gaps and v.startswith("pdp") else "-"
            out.append(f"| {100 * s:g}% | {v} | {mean_sd(ppl)} | {', '.join(f'{x:.2f}' for x in ppl)} | "
                       f"{vs} | {gap} | {vs_dense} |")
    return out


def targets(rows: list[dict]) -> list[str]:
    """The benchmark's targets (PDP at most 0.97x the best other method at 95%, 0.93x at 98%),
    checked on these numbers (means over seeds; "apart": PDP's worst seed is better than the
    competitor's best)."""
    g = groups(rows)
    out = []
    ship = shipped_variant() or "pdp"
    for s, goal in ((0.95, 0.97), (0.98, 0.93)):
        p = _ppl(g, ship, s)
        peer = best_other(g, s, distilled=False)
        if p and peer:
            ratio = statistics.mean(p) / statistics.mean(peer[1])
            beaten = [v for v in VARIANTS if v not in (ship, "dense") and _ppl(g, v, s)
                      and max(p) < min(_ppl(g, v, s))]
            others = [v for v in VARIANTS if v not in (ship, "dense") and _ppl(g, v, s)]
            lost = [v for v in others if v not in beaten]
            out.append(f"- {100 * s:g}%: PDP (shipped defaults) {mean_sd(p)} vs the best other method, {peer[0]} "
                       f"{mean_sd(peer[1])}: ratio {ratio:.3f} (target <= {goal}) - {'met' if ratio <= goal else 'NOT met'}; "
                       f"seed ranges apart from every other method: "
                       f"{'yes' if not lost else 'no (' + ', '.join(lost) + ')'}")
    for s in DISTILL_SPARSITIES:
        p = _ppl(g, f"{ship}+distill", s)
        peer = best_other(g, s, distilled=True)
        if p and peer:
            apart = max(p) < min(peer[1])
            out.append(f"- {100 * s:g}% with distillation: PDP {mean_sd(p)} vs {peer[0]} {mean_sd(peer[1])}: ratio "
                       f"{statistics.mean(p) / statistics.mean(peer[1]):.3f}, seed ranges "
                       f"{'apart' if apart else 'overlap'} - {'met' if apart else 'NOT met'}")
    p = _ppl(g, f"{ship}+distill", 0.95)
    dense = g.get(("dense", None), [])
    if p and dense:
        bundled = _num(dense[0]["perplexity_dense"])
        ch = statistics.mean(p) / bundled - 1
        out.append(f"- distilled PDP at 95% vs the bundled dense model ({bundled:.2f}): {100 * ch:+.1f}% "
                   f"(target within 10%) - {'met' if ch <= 0.10 else 'NOT met'}")
    gaps = [(_num(r.get("soft_hard_gap")), r["trial"]) for (v, _), rs in g.items() if v == ship for r in rs
            if _num(r.get("soft_hard_gap")) is not None]
    if gaps:
        worst = max(gaps)
        out.append(f"- soft-to-hard gap, shipped-default PDP, every benchmark point: at most {100 * worst[0]:+.2f}% "
                   f"({worst[1]}) (target <= 0.5%) - {'met' if worst[0] <= 0.005 else 'NOT met'}")
    return out


def sweep_table(rows: list[dict]) -> list[str]:
    out = ["| run | test ppl (hard) | soft | train steps |", "|---|---:|---:|---:|"]
    for r in sorted(rows, key=lambda r: r["trial"]):
        out.append(f"| {r['trial']} | {_num(r.get('perplexity')) or float('nan'):.2f} | "
                   f"{_num(r.get('perplexity_soft')) or float('nan'):.2f} | {r.get('train_steps')} |")
    return out


def loss_curve_plot(out: Path, runs_dir: Path, rows: list[dict], path: Path) -> bool:
    """GMP's (and PDP's) training loss at each high sparsity: the recovery has flattened when the
    curve is flat at the end (smoothed; seed 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), sharey=True)
    drew = False
    for ax, s in zip(axes, (0.9, 0.95, 0.98)):
        for v, color in (("gmp", "tab:orange"), ("movement", "tab:red"), ("pdp", "tab:green")):
            f = runs_dir / f"{v}-{tag(s)}-seed0" / "metrics.jsonl"
            if not f.is_file():
                continue
            pts = [json.loads(ln) for ln in f.read_text().splitlines() if ln.strip()]
            xs, ys, ema = [], [], None
            for p in pts:
                if p.get("loss") is None:
                    continue
                ema = p["loss"] if ema is None else 0.8 * ema + 0.2 * p["loss"]
                xs.append(p["step"])
                ys.append(ema)
            ax.plot(xs, ys, color=color, label=v)
            drew = True
        ax.set_title(f"{100 * s:g}% sparsity")
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("training loss (EMA 0.8)")
    axes[0].legend()
    fig.tight_layout()
    if drew:
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drew


def update_docs(docs: Path, block: str) -> None:
    md = docs / "results.md"
    text = md.read_text() if md.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    md.write_text(f"{pre}{BEGIN}\n{block}\n{END}{post}")


def csv_row(r: dict) -> dict:
    """A results.csv row back as run_all gives it: numbers as numbers, empty cells absent."""
    out = {}
    for k, v in r.items():
        if v in ("", None):
            continue
        try:
            out[k] = int(v) if v.lstrip("-").isdigit() else float(v) if k not in ("trial", "status", "model",
                                                                                  "dataset", "eval_split", "method",
                                                                                  "error", "cached") else v
        except ValueError:
            out[k] = v
    return out


def write_csv(rows: list[dict], path: Path) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    runs = plan_sweep(args) if args.stage == "sweep" else plan_main(args)
    planned = [name for name, _ in runs]
    if args.only:
        runs = [r for r in runs if r[0] in args.only]
    if args.dry_run and args.stage == "all":
        runs = runs + plan_sweep(args)
    if args.dry_run:
        for name, params in runs:
            print(name, " ".join(f"--{k}={v}" for k, v in params.items()))
        print(f"{len(runs)} runs")
        return 0
    out = Path(args.out)
    t0 = time.time()
    command = " ".join(["python benchmarks/results.py", *(sys.argv[1:] if argv is None else argv)])
    if args.stage == "sweep":
        (sweep_rows,) = run_all([(out / "sweep", runs)], args.jobs)
        table = sweep_table(sweep_rows)
        (out / "sweep.md").write_text(f"Generated by `{command}`\n\n" + "\n".join(table) + "\n")
        print("\n".join(table))
        return 0
    batches = [(out / "runs", runs)]
    if args.stage == "all":  # the sweep's extra runs share the pool; the centre runs come first
        centre = [r for r in runs if r[0].endswith(f"-{tag(args.sweep_sparsity)}-seed0")]
        batches = [(out / "runs", centre), (out / "sweep", plan_sweep(args)),
                   (out / "runs", [r for r in runs if r not in centre])]
    results = run_all(batches, args.jobs)
    rows = [r for (o, _), rs in zip(batches, results) if o == out / "runs" for r in rs]
    if args.stage == "all":
        sweep_rows = results[1] + [r for r in rows if r["trial"].endswith(f"-{tag(args.sweep_sparsity)}-seed0")]
        (out / "sweep.md").write_text(f"Generated by `{command}`\n\n" + "\n".join(sweep_table(sweep_rows)) + "\n")
    total = time.time() - t0
    kept = []
    if args.rows_from:  # the planned runs not rerun, as the CSV has them (marked, so the table says which)
        done = {r["trial"] for r in rows}
        with open(args.rows_from, newline="") as f:
            kept = [dict(r, cached="csv") for r in csv.DictReader(f) if r["trial"] in planned and r["trial"] not in done]
        rows = sorted(rows + [csv_row(r) for r in kept], key=lambda r: planned.index(r["trial"]))
    from pdp_gpt2.report.report import write_report

    cost = [p for p in (ROOT / "docs/data/step_overhead_b4.json", ROOT / "docs/data/inference_speed.json") if p.is_file()]
    report = write_report([out / "runs"], out / "report", title="PDP vs baselines on the embedded GPT-2",
                          note=f"{args.max_steps} steps per run, 3 seeds at 90-98%", cost_files=cost)
    block = [f"Budget: {args.max_steps} optimizer steps of 8 x 128 tokens per run for every method; per-method "
             f"learning rate and sparsity ramp from the sweep (see below); test split of the embedded corpus, "
             f"non-overlapping 128-token windows.",
             f"Generated {time.strftime('%Y-%m-%d')} by `{command}` ({len(runs)} runs, "
             f"{sum(r['status'] == 'ok' for r in rows)} finished; {total / 60:.0f} min of wall time for the runs "
             f"not reused).", "", *results_table(rows, args.sparsities), "", "Targets:", "", *targets(rows), ""]
    if kept:
        block.insert(2, f"{len(kept)} rows come from `{args.rows_from}` (earlier runs of code that gives the same "
                        f"result bit for bit); the plots and slides below predate the rerun of "
                        f"{', '.join(sorted({base_variant(n.rsplit('-', 2)[0]) for n in args.only}))}.")
    if args.docs and kept:
        docs = Path(args.docs)
        write_csv(rows, docs / "results.csv")
        pngs = sorted(p.name for p in (docs / "plots").glob("*.png"))
        if (docs / "slides.pdf").is_file():
            block.append("Slides: [slides.pdf](slides.pdf).\n")
        block += [f"![{n[:-4]}](plots/{n})" for n in pngs]
        update_docs(docs, "\n".join(block))
    elif args.docs:
        docs = Path(args.docs)
        (docs / "plots").mkdir(parents=True, exist_ok=True)
        pngs = list(report.get("pngs", []))
        for name in pngs:
            shutil.copy2(out / "report" / name, docs / "plots" / name)
        if loss_curve_plot(out, out / "runs", rows, docs / "plots" / "recovery_loss.png"):
            pngs.insert(0, "recovery_loss.png")
        if (out / "report" / "slides.pdf").is_file():
            shutil.copy2(out / "report" / "slides.pdf", docs / "slides.pdf")
            block.append("Slides: [slides.pdf](slides.pdf).\n")
        write_csv(rows, docs / "results.csv")
        block += [f"![{n[:-4]}](plots/{n})" for n in pngs]
        update_docs(docs, "\n".join(block))
    print("\n".join(b for b in block if not b.startswith("![")))
    print(f"benchmark: {total / 60:.1f} min; report in {out / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
