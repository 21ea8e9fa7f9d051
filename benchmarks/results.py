"""The embedded benchmark behind docs/results.md: one command regenerates its numbers and plots.

    python benchmarks/results.py                # the documented configuration (see docs/results.md)

The embedded GPT-2 on the embedded Shakespeare corpus, pruned to each target
sparsity by every method at one equal budget (same data order, steps, ramp,
optimizer, learning-rate schedule and evaluation):

    dense (once), magnitude, gmp, pdp (default tau), pdp + each extension
    (--improved_masking, --quantize 8 bits, --custom_optimizer), and with
    pdp at a few more taus at 90% (the tau x sparsity heatmap).

Each run is one `pdp-gpt2 train` subprocess (pdp_gpt2.report.sweep.run_trials), so a
finished run is reused when the script is re-run with the same flags: an
interrupted benchmark continues where it stopped.  Afterwards it writes the
report (`pdp-gpt2 report`) into <out>/report, copies its PNGs into
docs/plots/, the per-run table into docs/results.csv, and rewrites the block
between the GENERATED markers of docs/results.md.  The text around it is
written by hand.
"""
from __future__ import annotations

import argparse
import csv
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/results.py) -->", "<!-- END GENERATED -->"
EXTENSIONS = {"pdp": {}, "pdp+improved": {"improved_masking": True}, "pdp+q8": {"quantize": True, "bits": 8},
              "pdp+maskopt": {"custom_optimizer": True}}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/results", help="where the runs and the report go")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    p.add_argument("--max_steps", type=int, default=200, help="optimizer steps per run (the equal budget)")
    p.add_argument("--warmup_steps", type=int, default=None, help="sparsity ramp length (default: max_steps // 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tau_grid", type=float, nargs="*", default=[0.005, 0.08, 0.3],
                   help="extra pdp taus (besides the default 0.02) for the tau x sparsity heatmap")
    p.add_argument("--tau_sparsities", type=float, nargs="*", default=[0.9],
                   help="the sparsities at which the --tau_grid runs are made")
    p.add_argument("--wanda", action="store_true", help="also run the one-shot wanda baseline")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="any other train flag for every run, e.g. --set learning_rate=1e-3")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="docs directory to update ('' to skip)")
    p.add_argument("--dry_run", action="store_true", help="list the runs and exit")
    return p.parse_args(argv)


def plan(args) -> list[tuple[str, dict]]:
    common = {"model": "embedded", "dataset": "shakespeare", "eval_split": "test", "seed": args.seed,
              "max_steps": args.max_steps, "warmup_steps": args.warmup_steps or args.max_steps // 2,
              "log_interval": max(1, args.max_steps // 40),
              # Non-overlapping windows: every run scores the whole test split at half the default cost
              # (three evaluations per run dominate a short run on two CPU cores).
              "eval_stride": 128}
    for item in args.set:
        k, _, v = item.partition("=")
        common[k.strip().lstrip("-")] = v
    runs = [("dense", {**common, "method": "dense"})]
    for s in sorted(args.sparsities, reverse=True):  # the hardest target first: its numbers matter most
        tag = f"s{round(100 * s)}"
        base = {**common, "sparsity": s}
        methods = ["magnitude", "gmp"] + (["wanda"] if args.wanda else [])
        runs += [(f"{m}-{tag}", {**base, "method": m}) for m in methods]
        runs += [(f"{name}-{tag}", {**base, "method": "pdp", **flags}) for name, flags in EXTENSIONS.items()]
        if s in args.tau_sparsities:
            runs += [(f"pdp-tau{t:g}-{tag}", {**base, "method": "pdp", "tau": t}) for t in args.tau_grid]
    return runs


def _num(x):
    try:
        return float(x)
    except (TypeError, ValueError):
        return None


def results_table(rows: list[dict], sparsities: list[float]) -> list[str]:
    """Markdown: one block of rows per target sparsity, dense first."""
    by = {r["trial"]: r for r in rows}
    dense = _num(by.get("dense", {}).get("perplexity"))
    head = ["| sparsity | method | test ppl (hard) | soft ppl | soft-to-hard gap | vs dense fine-tuned |"
            " actual sparsity | train s | wall s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]

    def line(label, r):
        ppl, soft, gap = _num(r.get("perplexity")), _num(r.get("perplexity_soft")), _num(r.get("soft_hard_gap"))
        if r.get("status") != "ok" or ppl is None:
            return f"| {label} | failed: {r.get('error', '')} | | | | | | | |"
        vs = "-" if dense is None else f"{100 * (ppl / dense - 1):+.1f}%"
        return (f"| {label} | {ppl:.2f} | {'-' if soft is None else f'{soft:.2f}'} | "
                f"{'-' if gap is None else f'{100 * gap:+.2f}%'} | {vs} | "
                f"{100 * _num(r['sparsity_actual']):.2f}% | {_num(r['train_seconds']):.0f} | "
                f"{_num(r.get('wall_seconds')) or 0:.0f} |")

    out = list(head)
    if "dense" in by:
        out.append(line("0% | dense", by["dense"]))
    for s in sparsities:
        tag = f"s{round(100 * s)}"
        for r in rows:
            if r["trial"].endswith(f"-{tag}"):
                out.append(line(f"{100 * s:g}% | {r['trial'][:-len(tag) - 1]}", r))
    return out


def targets(rows: list[dict]) -> list[str]:
    """The issue's three targets, checked on these numbers."""
    by = {r["trial"]: _num(r.get("perplexity")) for r in rows if r.get("status") == "ok"}
    gaps = {r["trial"]: _num(r.get("soft_hard_gap")) for r in rows
            if r.get("status") == "ok" and r["trial"].startswith("pdp") and "-tau" not in r["trial"]
            and _num(r.get("soft_hard_gap")) is not None}  # the target is for the default tau
    out = []
    if by.get("pdp-s90") and by.get("gmp-s90"):
        d = 1 - by["pdp-s90"] / by["gmp-s90"]
        out.append(f"- 90%: PDP {by['pdp-s90']:.2f} vs GMP {by['gmp-s90']:.2f}: PDP is {100 * d:.1f}% lower "
                   f"(target: at least 10% lower) - {'met' if d >= 0.10 else 'NOT met'}")
    if by.get("pdp-s50") and by.get("dense"):
        d = by["pdp-s50"] / by["dense"] - 1
        out.append(f"- 50%: PDP {by['pdp-s50']:.2f} vs dense fine-tuned {by['dense']:.2f}: {100 * d:+.1f}% "
                   f"(target: within 3%) - {'met' if d <= 0.03 else 'NOT met'}")
    if gaps:
        worst = max(gaps, key=gaps.get)
        out.append(f"- soft-to-hard gap over the pdp runs at the default tau: at most {100 * gaps[worst]:+.2f}% ({worst}) "
                   f"(target: under 2%) - {'met' if gaps[worst] < 0.02 else 'NOT met'}")
    return out


def update_docs(docs: Path, block: str) -> None:
    md = docs / "results.md"
    text = md.read_text() if md.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    pre, rest = text.split(BEGIN, 1)
    post = rest.split(END, 1)[1]
    md.write_text(f"{pre}{BEGIN}\n{block}\n{END}{post}")


def main(argv=None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    from pdp_gpt2.report.report import write_report
    from pdp_gpt2.report.sweep import run_trials

    runs = plan(args)
    if args.dry_run:
        for name, params in runs:
            print(name, " ".join(f"--{k}={v}" for k, v in params.items()))
        return 0
    out = Path(args.out)
    t0 = time.time()
    rows = run_trials(runs, out / "runs")
    total = time.time() - t0
    report = write_report([out / "runs"], out / "report", title="PDP vs baselines on the embedded GPT-2")
    steps = runs[0][1]
    block = [f"Budget: {steps['max_steps']} optimizer steps per run (sparsity ramp {steps['warmup_steps']} steps, "
             f"{runs[1][1].get('schedule', 'cubic')} schedule), seed {args.seed}, batch 8 x 128 tokens, "
             f"default learning rate and schedule; test split of the embedded corpus.",
             f"Generated {time.strftime('%Y-%m-%d')} by "
             f"`{' '.join(['python benchmarks/results.py', *(sys.argv[1:] if argv is None else argv)])}` "
             f"({len(runs)} runs, {sum(r['status'] == 'ok' for r in rows)} finished).", "",
             *results_table(rows, args.sparsities), "", "Targets from the issue:", "", *targets(rows), ""]
    if args.docs:
        docs = Path(args.docs)
        (docs / "plots").mkdir(parents=True, exist_ok=True)
        for name in report["pngs"]:
            shutil.copy2(out / "report" / name, docs / "plots" / name)
        block += [f"![{n[:-4]}](plots/{n})" for n in report["pngs"]]
        with open(out / "runs" / "sweep.csv") as src, open(docs / "results.csv", "w", newline="") as dst:
            rows_csv = list(csv.DictReader(src))
            w = csv.DictWriter(dst, fieldnames=list(rows_csv[0]))
            w.writeheader()
            w.writerows(rows_csv)
        update_docs(docs, "\n".join(block))
    print("\n".join(block[:-len(report["pngs"])] if args.docs else block))
    print(f"benchmark: {total / 60:.1f} min; report in {out / 'report'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
