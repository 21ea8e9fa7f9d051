"""Benchmark v3's harness on structured pruning: whole MLP neurons (``--pattern neurons``).

    python benchmarks/structured.py            # the runs, then docs/results_structured.md, its CSV and plot

The embedded GPT-2 on the embedded Shakespeare corpus, the same budget, seeds, data order and
evaluation as benchmarks/results.py, each method with the learning rate and ramp that benchmark's
sweep chose (tuned for unstructured 95%, not retuned here): pdp, gmp, magnitude and movement prune
25% and 50% of every MLP's neurons, each with and without distillation. One more row per sparsity,
"pdp+unstructured", prunes the same number of MLP weights one by one (``--pattern unstructured
--targets *.mlp.*``): the quality price of removing whole neurons. The dense row is benchmark v3's
(docs/results.csv: the same code and flags). Runs are reused when their flags match, so an
interrupted benchmark continues where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import results as R  # noqa: E402  (benchmark v3's harness: flags, runner, CSV)

ROOT = R.ROOT
METHODS = ("pdp", "gmp", "magnitude", "movement")
SPARSITIES = (0.5, 0.25)  # the harder one first: its numbers matter most
UNSTRUCTURED = {"pattern": "unstructured", "targets": "*.mlp.*"}
BEGIN, END = "<!-- BEGIN GENERATED (benchmarks/structured.py) -->", "<!-- END GENERATED -->"


def variants() -> dict[str, tuple[str, dict]]:
    """Row name -> (the method whose settings it takes, its extra flags)."""
    out = {}
    for m in METHODS:
        out[m] = (m, {"pattern": "neurons"})
        out[f"{m}+distill"] = (m, {"pattern": "neurons", **R.DISTILL})
    out["pdp+unstructured"] = ("pdp", UNSTRUCTURED)
    return out


def plan(args) -> list[tuple[str, dict]]:
    """Every run, the undistilled ones first (both sparsities), then the distilled ones."""
    runs = []
    for distilled in (False, True):
        for s in SPARSITIES:
            for name, (base, extra) in variants().items():
                if name.endswith("+distill") != distilled:
                    continue
                for k in range(args.seeds):
                    runs.append((f"{name}-{R.tag(s)}-seed{k}", R.run_flags(args, base, s, k, extra=extra)))
    return runs


def best_other(g: dict, s: float, distilled: bool):
    names = [f"{m}+distill" if distilled else m for m in METHODS if m != "pdp"]
    scored = [(statistics.mean(R._ppl(g, v, s)), v) for v in names if R._ppl(g, v, s)]
    return min(scored)[1] if scored else None


def table(rows: list[dict], dense: list[float]) -> list[str]:
    g = R.groups(rows)
    dmean = statistics.mean(dense) if dense else None
    out = ["| MLP neurons removed | method | test ppl (hard), mean ± sd | seeds | vs best other | "
           "seed ranges vs it | vs dense fine-tuned |", "|---|---|---:|---|---:|---|---:|"]
    if dense:
        out.append(f"| 0% | dense (benchmark v3) | {R.mean_sd(dense)} | {', '.join(f'{x:.2f}' for x in dense)} "
                   "| - | - | - |")
    for s in SPARSITIES:
        for v in variants():
            p = R._ppl(g, v, s)
            if not p:
                continue
            peer = best_other(g, s, v.endswith("+distill")) if v.split("+")[0] == "pdp" and v != "pdp+unstructured" \
                else None
            vs = apart = "-"
            if peer:
                q = R._ppl(g, peer, s)
                vs = f"{statistics.mean(p) / statistics.mean(q):.3f} ({peer})"
                apart = "apart" if max(p) < min(q) else ("apart, worse" if min(p) > max(q) else "overlap")
            d = f"{100 * (statistics.mean(p) / dmean - 1):+.1f}%" if dmean else "-"
            out.append(f"| {100 * s:g}% | {v} | {R.mean_sd(p)} | {', '.join(f'{x:.2f}' for x in p)} | {vs} | "
                       f"{apart} | {d} |")
    return out


def findings(rows: list[dict]) -> list[str]:
    """Where PDP wins and where it loses, computed from the rows."""
    g = R.groups(rows)
    out = []
    for s in SPARSITIES:
        for distilled in (False, True):
            v = "pdp+distill" if distilled else "pdp"
            p, peer = R._ppl(g, v, s), best_other(g, s, distilled)
            if not p or not peer:
                continue
            q = R._ppl(g, peer, s)
            verdict = ("wins, seed ranges apart" if max(p) < min(q) else
                       "loses, seed ranges apart" if min(p) > max(q) else
                       "ties (seed ranges overlap)")
            out.append(f"- {100 * s:g}% of neurons{' with distillation' if distilled else ''}: {v} {R.mean_sd(p)} "
                       f"vs the best other, {peer} {R.mean_sd(q)}: ratio "
                       f"{statistics.mean(p) / statistics.mean(q):.3f}, {verdict}")
        p, u = R._ppl(g, "pdp", s), R._ppl(g, "pdp+unstructured", s)
        if p and u:
            out.append(f"- The price of structure at {100 * s:g}%: whole neurons {R.mean_sd(p)} against the same "
                       f"number of MLP weights one by one {R.mean_sd(u)} "
                       f"({100 * (statistics.mean(p) / statistics.mean(u) - 1):+.1f}%)")
    return out


def dense_from_v3(path: Path) -> list[float]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [float(r["perplexity"]) for r in csv.DictReader(f)
                if r["trial"].startswith("dense-seed") and r.get("status") == "ok"]


def plot(rows: list[dict], dense: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = R.groups(rows)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = sorted(SPARSITIES)
    for v in variants():
        pts = [(100 * s, R._ppl(g, v, s)) for s in xs if R._ppl(g, v, s)]
        if not pts:
            continue
        x = [a for a, _ in pts]
        m = [statistics.mean(p) for _, p in pts]
        lo = [mm - min(p) for mm, (_, p) in zip(m, pts)]
        hi = [max(p) - mm for mm, (_, p) in zip(m, pts)]
        ax.errorbar(x, m, yerr=[lo, hi], marker="o", capsize=3, label=v,
                    linestyle="--" if "distill" in v else (":" if "unstructured" in v else "-"))
    if dense:
        ax.axhline(statistics.mean(dense), color="#333333", linewidth=0.8, label="dense fine-tuned")
    ax.set_xlabel("MLP neurons removed (%)")
    ax.set_ylabel("test perplexity (hard), seeds' min-max")
    ax.set_title("Structured pruning: whole MLP neurons, embedded GPT-2")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def slide(rows: list[dict], dense: list[float], path: Path) -> None:
    """One slide for the deck: the finding at 50% as its title, the plot and the table's means."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    png = path.with_suffix(".png.tmp.png")
    plot(rows, dense, png)
    found = findings(rows)
    title = found[0].removeprefix("- ") if found else "Structured pruning: whole MLP neurons"
    g = R.groups(rows)
    lines = [f"{100 * s:g}%  {v:<22} {statistics.mean(R._ppl(g, v, s)):7.2f}"
             for s in SPARSITIES for v in variants() if R._ppl(g, v, s)]
    fig = plt.figure(figsize=(11, 6.2))
    fig.suptitle(title, fontsize=11, wrap=True)
    ax = fig.add_axes([0.02, 0.05, 0.6, 0.82])
    ax.imshow(mpimg.imread(png))
    ax.axis("off")
    fig.text(0.64, 0.85, "test perplexity, mean of seeds", fontsize=9, weight="bold")
    fig.text(0.64, 0.82, "\n".join(lines + ([f"dense  {statistics.mean(dense):.2f}"] if dense else [])),
             fontsize=8, family="monospace", va="top")
    fig.savefig(path)
    plt.close(fig)
    png.unlink()


def finished_rows(runs: list[tuple[str, dict]], where: Path) -> list[dict]:
    """Rows of the planned runs that finished with their planned flags, as run_all gives them."""
    from pdp_gpt2.train.sweep import metrics_of
    from pdp_gpt2.train.sweep_dir import finished_with

    return [{"trial": name, "status": "ok", **flags, **metrics_of(where / name)}
            for name, flags in runs if finished_with(where / name, flags)]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/structured", help="where the runs go")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max_steps", type=int, default=300, help="optimizer steps per run (benchmark v3's budget)")
    p.add_argument("--jobs", type=int, default=2, help="runs at once, one CPU thread each")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE")
    p.add_argument("--docs", default=str(ROOT / "docs"), help="docs directory to update ('' to skip)")
    p.add_argument("--dry_run", action="store_true", help="list the runs and exit")
    p.add_argument("--finished_only", action="store_true",
                   help="start no run: the table from the runs already finished with their planned flags")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    runs = plan(args)
    if args.dry_run:
        for name, flags in runs:
            print(name, " ".join(f"--{k} {v}" for k, v in flags.items()))
        return 0
    out = Path(args.out)
    if args.finished_only:
        rows = finished_rows(runs, out / "runs")
    else:
        (rows,) = R.run_all([(out / "runs", runs)], args.jobs)
    if not args.docs:
        return 0
    docs = Path(args.docs)
    dense = dense_from_v3(docs / "results.csv")
    R.write_csv(rows, docs / "results_structured.csv")
    plot(rows, dense, docs / "structured.png")
    slide(rows, dense, docs / "slides_structured.pdf")
    block = ["Generated by `python benchmarks/structured.py` (runs in `runs/structured/runs`).", "",
             *table(rows, dense), "", "Findings, computed from the table:", "", *findings(rows)]
    page = docs / "results_structured.md"
    text = page.read_text() if page.is_file() else f"# Structured pruning: whole MLP neurons\n\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    page.write_text(f"{head}{BEGIN}\n" + "\n".join(block) + f"\n{END}{tail}")
    print("\n".join(block))
    return 0


if __name__ == "__main__":
    sys.exit(main())
