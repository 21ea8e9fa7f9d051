"""``slides.pdf``: the results as a short deck, one idea per slide, made with matplotlib's
PDF backend (no new dependency).

Each slide's title states its finding, computed from the runs in
:mod:`pdp_gpt2.report.findings`; charts reuse the report's draw functions and colours
(:mod:`pdp_gpt2.report.style`), so a method looks the same in the PNGs, the dashboard
and the deck.  A slide whose data is missing is left out, and the reason is listed
on the first slide and returned to the report.
"""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_pdf import PdfPages  # noqa: E402

from pdp_gpt2.report import findings, plots, style, tasks  # noqa: E402
from pdp_gpt2.report.methods import SHIPPED  # noqa: E402

SIZE = (13.33, 7.5)  # 16:9 inches
TOP = 0.68  # charts end here: room for a two-line title and a two-line subtitle above
CHART = (0.07, 0.1, 0.86, TOP - 0.1)  # left, bottom, width, height of a one-chart slide


def _slide(title: str, sub: str = ""):
    """A blank slide with its finding as the title (wrapped to the slide) and a grey subtitle."""
    fig = plt.figure(figsize=SIZE)
    lines = textwrap.wrap(title, 62, break_on_hyphens=False)
    fig.text(0.04, 0.95, "\n".join(lines), fontsize=21, weight="bold", va="top")
    if sub:
        sub = "\n".join(textwrap.wrap(sub, 140, break_on_hyphens=False))
        fig.text(0.04, 0.95 - 0.068 * len(lines) - 0.015, sub, fontsize=12, color="#555555", va="top")
    return fig


def _readable(ax) -> None:
    """A report panel on a slide: the slide title says it, so no axes title; larger text."""
    ax.set_title("")
    ax.tick_params(labelsize=11)
    ax.xaxis.label.set_size(12)
    ax.yaxis.label.set_size(12)
    if ax.get_legend():
        for t in ax.get_legend().get_texts():
            t.set_fontsize(10)


def _one_of(runs, key: str, default: str = "?") -> str:
    vals = sorted({str(r.summary.get(key) if r.summary.get(key) is not None else r.cfg.get(key, default))
                   for r in runs})
    return ", ".join(vals) if vals else default


def cover(runs, title: str, note: str, skipped: list[str]):
    fig = _slide(title, note)
    pruned = [r for r in runs if r.prunes]
    steps = sorted({r.summary.get("train_steps") for r in runs if r.summary.get("train_steps")})
    ramps = sorted({r.summary.get("ramp_steps") for r in pruned if r.summary.get("ramp_steps")})
    seeds = sorted({str(r.seed) for r in runs if r.seed is not None})
    weights = max((r.summary.get("target_weights") or 0 for r in pruned), default=0)
    tensors = max((len(r.layers) for r in pruned), default=0)
    def values(key: str, fmt: str = "{}") -> str:
        return "/".join(fmt.format(v) for v in sorted({r.cfg[key] for r in runs if r.cfg.get(key) is not None}))

    lines = [
        ("Model", f"{_one_of(runs, 'model')}; pruned: {weights:,} weights in {tensors} tensors" if weights
         else _one_of(runs, "model")),
        ("Data", f"{_one_of(runs, 'dataset')}; perplexity on the {_one_of(runs, 'eval_split')} split, "
                 "final hard-pruned weights"),
        ("Budget", f"{'/'.join(map(str, steps)) or '?'} optimizer steps per run"
                   + (f", sparsity ramp {'/'.join(map(str, ramps))} steps" if ramps else "")
                   + (f", batch {values('batch_size')} × {values('max_length')} tokens"
                      if values("batch_size") else "")
                   + (f", learning rate {values('learning_rate', '{:g}')}" if values("learning_rate") else "")),
        ("Methods", ", ".join(lab for _, lab in sorted({(r.prunes, r.label) for r in runs}))),  # dense first
        ("Sparsity", ", ".join(f"{100 * t:g}%" for t in sorted({r.target for r in pruned})) or "-"),
        ("Runs", f"{len(runs)} finished, seed(s) {', '.join(seeds) or '?'}"),
    ]
    y = 0.72
    fig.text(0.06, y + 0.05, "What was pruned", fontsize=16, weight="bold")
    for head, text in lines:
        wrapped = textwrap.wrap(text, 95) or [""]
        fig.text(0.06, y, head, fontsize=13, weight="bold", va="top")
        fig.text(0.19, y, "\n".join(wrapped), fontsize=13, va="top")
        y -= 0.065 * len(wrapped)
    if skipped:
        fig.text(0.06, 0.05, "Not in this deck (no data): " + "; ".join(skipped), fontsize=9, color="#777777",
                 wrap=True)
    return fig


def ppl_slide(runs):
    f = findings.top_sparsity(runs)
    if isinstance(f, str):
        return f
    fig = _slide(f["title"], "lower is better; log scale; the black line is the dense model fine-tuned "
                             "with the same budget")
    ax = fig.add_axes(CHART)
    plots.draw_ppl_vs_sparsity(ax, runs)
    _readable(ax)
    return fig


def pdp_vs_best_slide(runs):
    f = findings.pdp_vs_best(runs)
    if isinstance(f, str):
        return f
    d = findings.dense_ppl(runs)
    fig = _slide(f["title"], f["sub"] + (f"; dense fine-tuned: {d:.2f}" if d else ""))
    ax = fig.add_axes((0.1, 0.1, 0.8, TOP - 0.1))
    for i, p in enumerate(f["points"]):
        c = style.color(p.label)
        xs = [i + 0.12 * (j - (p.n - 1) / 2) / max(1, p.n - 1) for j in range(p.n)]
        ax.scatter(xs, p.values, s=18, color=c, alpha=0.6, zorder=2)
        ax.errorbar([i + 0.3], [p.mean], yerr=[p.sd] if p.n > 1 else None, fmt="D", ms=10, capsize=6,
                    color=c, label=p.label, zorder=3)
        ax.annotate(p.text(), (i + 0.38, p.mean), fontsize=11, va="center")
    ax.set_xticks(range(len(f["points"])), [p.label for p in f["points"]], fontsize=12)
    ax.set_xlim(-0.5, len(f["points"]) - 0.1)
    ax.set_ylabel(f"{runs[0].split} perplexity at {100 * f['top']:g}% sparsity")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9, loc="upper left")
    return fig


TASK_ROWS = 14  # rows of the task table that fit a slide; report.md has them all


def tasks_slide(runs):
    """lm-eval scores next to the perplexity; None (no slide, no 'not made' line) when no run has any."""
    f = tasks.finding(runs)
    if f is None:
        return None
    head, rows = tasks.table(runs)
    shown = rows[-TASK_ROWS:]  # sorted by sparsity: keep the highest
    sub = ("lm-evaluation-harness on the final hard-pruned weights (train --eval_tasks); ↑ higher is better, "
           "↓ lower; mean ± sd over seeds where several")
    if len(shown) < len(rows):
        sub += f"; the {len(shown)} rows at the highest sparsities of {len(rows)} (all in report.md)"
    fig = _slide(f["title"], sub)
    ax = fig.add_axes((0.04, 0.05, 0.92, TOP - 0.07))
    ax.axis("off")
    labels = [h.replace("/", "/\n", 1) for h in head]  # 'task/\nmetric ↑': long names on two lines
    tab = ax.table(cellText=shown, colLabels=labels, loc="upper center", cellLoc="center")
    tab.auto_set_font_size(False)
    tab.set_fontsize(11 if len(head) <= 6 else 9)
    tab.scale(1, 1.6)
    for j in range(len(head)):
        tab[0, j].set_height(2 * tab[0, j].get_height())
    best = {m: lab for m, (lab, _) in f["best"].items()}
    for (i, j), cell in tab.get_celld().items():
        if i == 0:
            cell.set_text_props(weight="bold")
        elif j == 0:
            cell.set_text_props(color=style.color(shown[i - 1][0]), weight="bold")
        elif j >= 3 and shown[i - 1][1] == f"{100 * f['top']:g}" \
                and best.get(head[j].rsplit(" ", 1)[0]) == shown[i - 1][0]:
            cell.set_text_props(weight="bold")  # the best value at the sparsity the title speaks of
    return fig


def tau_slide(runs):
    f = findings.tau_picture(runs)
    if isinstance(f, str):
        return f
    fig = _slide(f["title"], f["sub"])
    left = fig.add_axes((0.06, 0.1, 0.42, TOP - 0.1))
    right = fig.add_axes((0.57, 0.1, 0.39, TOP - 0.1))
    if f["kind"] == "schedule":
        _relative_bars(left, f["deltas"], "perplexity vs plain pdp (%)", "pdp (constant τ)")
        if _draw_band(right, runs, f["top"]):
            right.axis("off")
        return fig
    if not plots.draw_tau_heatmap(left, runs):
        _readable(left)
    else:  # one sparsity only: a curve instead of a one-column heatmap
        left.clear()
        row = f["row"]
        left.plot([float(p.label) for p in row], [p.mean for p in row], **style.line_kw(SHIPPED))
        left.set_xscale("log")
        left.set_xlabel("tau (log scale)")
        left.set_ylabel(f"perplexity at {100 * f['target']:g}%")
        left.grid(True, which="both", alpha=0.3)
    if f["gaps"]:
        taus = [float(p.label) for p, _ in f["gaps"]]
        right.plot(taus, [100 * g for _, g in f["gaps"]], **style.line_kw(SHIPPED))
        right.set_xscale("log")
        right.axhline(0, color="gray", lw=0.8)
        right.set_xlabel("tau (log scale)")
        right.set_ylabel(f"soft-to-hard gap at {100 * f['target']:g}% (%)")
        right.set_title("What finalize costs, per tau")
        right.grid(True, which="both", alpha=0.3)
        right.legend(fontsize=9)
    else:
        right.axis("off")
    return fig


def _draw_band(ax, runs, target: float) -> str | None:
    """Fraction of weights in the soft band over training, one curve per pdp variant (lowest seed)."""
    chosen = {}
    for r in sorted(runs, key=lambda r: str(r.seed)):
        if r.method == SHIPPED and abs(r.target - target) < 1e-9 and any(m.get("band") is not None for m in r.metrics):
            chosen.setdefault(r.label, r)
    if not chosen:
        return "no metrics.jsonl with the soft band"
    for lab, r in sorted(chosen.items()):
        ms = [m for m in r.metrics if m.get("band") is not None]
        ax.plot([m["step"] for m in ms], [100 * m["band"] for m in ms], color=style.color(lab),
                ls=style.linestyle(lab), lw=1.6, label=lab)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("weights with 0.05 < m < 0.95 (%)")
    ax.set_title(f"Undecided weights during training, {100 * target:g}% target (seed {r.seed})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=9)
    return None


def _relative_bars(ax, deltas: dict, ylabel: str, zero_label: str) -> None:
    """Grouped bars: one group per target sparsity, one bar per variant, in % vs the zero line."""
    labs = sorted(deltas)
    targets = sorted({t for d in deltas.values() for t in d})
    w = min(0.8 / len(labs), 0.2)
    for i, lab in enumerate(labs):
        xs = [j + w * (i - (len(labs) - 1) / 2) for j, t in enumerate(targets) if t in deltas[lab]]
        vals = [deltas[lab][t] for t in targets if t in deltas[lab]]
        ax.bar(xs, vals, w, color=style.color(lab), label=lab)
        for x, v in zip(xs, vals):
            ax.annotate(f"{v:+.2f}%", (x, v), ha="center", va="bottom" if v >= 0 else "top", fontsize=9)
    ax.axhline(0, color=style.color(SHIPPED), lw=1.5, label=zero_label)
    ax.set_xticks(range(len(targets)), [f"{100 * t:g}%" for t in targets], fontsize=12)
    ax.set_xlim(-0.6, len(targets) - 0.4)
    ax.set_xlabel("target sparsity")
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=9)


def extensions_slide(runs):
    f = findings.extensions(runs)
    if isinstance(f, str):
        return f
    fig = _slide(f["title"], "perplexity of PDP with each extension relative to plain PDP at the same sparsity "
                             "(below 0 = better)")
    _relative_bars(fig.add_axes(CHART), f["deltas"], "perplexity vs plain pdp (%)", "pdp (plain)")
    return fig


def cost_slide(cost: dict):
    title = findings.cost_title(cost)
    if title is None:
        return "no cost inputs (pass --cost with a step_overhead JSON or an export's size_report.json)"
    fig = _slide(title, "ratios to the dense model, measured by the benchmark scripts (step overhead) and "
                        "`pdp-gpt2 export` (size)")
    panels = [k for k in ("step", "size", "speed") if cost.get(k)]
    width = 0.86 / len(panels)
    for i, k in enumerate(panels):
        ax = fig.add_axes((0.07 + i * width, 0.1, width - 0.06, TOP - 0.14))
        if k == "step":
            s = cost["step"]
            names = list(s["ratio"])
            xs = range(len(names))
            ax.bar([x - 0.2 for x in xs], [s["ratio"][n] for n in names], 0.38,
                   color=[style.color(n) for n in names], label="step time")
            mem = [n for n in names if n in s["memory"]]
            if mem:
                ax.bar([names.index(n) + 0.2 for n in mem], [s["memory"][n] for n in mem], 0.38, hatch="//",
                       color="white", edgecolor=[style.color(n) for n in mem], label="peak memory")
            ax.set_xticks(list(xs), names, fontsize=11)
            ax.set_title(f"training step vs dense ({s['model']}, batch {s['batch']} × {s['seq']}, {s['device']})",
                         fontsize=10)
            ax.legend(fontsize=9)
        elif k == "size":
            z = cost["size"]
            ax.bar(["target weights", "whole model"], [z["target"]["ratio"], z["whole"]["ratio"]],
                   color=style.color(SHIPPED))
            ax.set_title(f"{z['format']} export, bytes vs dense", fontsize=10)
        else:
            names = list(cost["speed"])
            ax.bar(names, [cost["speed"][n] for n in names], color="#7f7f7f")
            ax.set_title("inference speed vs dense", fontsize=10)
        ax.axhline(1.0, **style.DENSE_LINE)
        ax.set_ylabel("× dense")
        for p in ax.patches:
            ax.annotate(f"{p.get_height():.2f}×", (p.get_x() + p.get_width() / 2, p.get_height()), ha="center",
                        va="bottom", fontsize=10)
    return fig


def lose_slide(runs, cost: dict):
    f = findings.losses(runs, cost)
    if isinstance(f, str):
        return f
    fig = _slide(f["title"], "every case in these runs where PDP does worse, or pays for what it does")
    y = 0.74
    for line in f["lines"][:14]:
        fig.text(0.07, y, "•  " + line, fontsize=14, va="top")
        y -= 0.05
    return fig


SLIDES = [("Perplexity vs sparsity", ppl_slide), ("PDP vs the best baseline", pdp_vs_best_slide),
          ("lm-eval task scores", tasks_slide), ("The τ picture", tau_slide), ("The extensions", extensions_slide)]


def build(runs, title: str, note: str = "", cost: dict | None = None) -> tuple[list, list[str]]:
    """(figures in order, 'name: reason' for every slide left out)."""
    cost = cost or {}
    figs, skipped = [], []
    for name, make in [*SLIDES, ("Cost", lambda r: cost_slide(cost)), ("Where we lose", lambda r: lose_slide(r, cost))]:
        out = make(runs)
        if out is None:  # a slide that only exists for some runs (lm-eval scores): absent, not "not made"
            continue
        if isinstance(out, str):
            skipped.append(f"{name}: {out}")
        else:
            figs.append(out)
    return [cover(runs, title, note, skipped), *figs], skipped


def write_slides(runs, path: str | Path, title: str, note: str = "", cost: dict | None = None) -> dict:
    """Write the deck to ``path`` (a PDF); returns its page count and the slides left out."""
    figs, skipped = build(runs, title, note, cost)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with PdfPages(tmp, metadata={"Title": title, "Creator": "pdp-gpt2 report"}) as pdf:
            for i, fig in enumerate(figs, 1):
                fig.text(0.01, 0.015, f"{i}/{len(figs)}", fontsize=8, color="#888888")
                pdf.savefig(fig)
            pages = pdf.get_pagecount()
    finally:
        for fig in figs:
            plt.close(fig)
    tmp.replace(path)
    path.chmod(0o644)
    return {"pages": pages, "skipped": skipped, "bytes": path.stat().st_size}

