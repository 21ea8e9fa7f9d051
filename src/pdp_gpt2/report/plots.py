"""Report plots.  Each ``draw_*`` function draws one panel into a matplotlib Axes and
returns None, or returns a one-line reason when the runs lack the data for it
(the caller then skips the plot and writes the reason into the report).

The same functions draw the stand-alone PNGs and the panels of the one-page
dashboard, so the two never disagree.  Runs are :class:`pdp_gpt2.report.report.Run`.
"""
from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")  # files only: never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from pdp_gpt2.report import style  # noqa: E402
from pdp_gpt2.report.methods import SHIPPED  # noqa: E402
from pdp_gpt2.report.stats import any_repeats, dense_mean, points  # noqa: E402

MAX_CURVES = 8  # more curves than this on one axis is unreadable
MAX_LINES = 10  # perplexity-vs-sparsity lines (few points each, with markers)


def _pct(x: float) -> float:
    return 100.0 * x


def _log_y(ax) -> None:
    """Log y axis labelled with plain numbers (perplexities span less than a decade or two)."""
    from matplotlib.ticker import FuncFormatter

    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:.3g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ax.tick_params(axis="y", which="minor", labelsize=7)


def pruned(runs):
    return [r for r in runs if r.prunes]


def focus_runs(runs) -> list:
    """The runs worth a curve: at the highest target sparsity one per variant (default tau
    first), plus one dense run; at most MAX_CURVES."""
    p = pruned(runs)
    out = []
    if p:
        top = max(r.target for r in p)
        seen = set()
        for r in sorted(p, key=lambda r: (r.label != r.family, r.label, math.inf if r.ppl is None else r.ppl)):
            if abs(r.target - top) < 1e-9 and r.label not in seen:
                seen.add(r.label)
                out.append(r)
    dense = [r for r in runs if not r.prunes][:1]
    return out[:MAX_CURVES - len(dense)] + dense


def ema(values: list[float], weight: float) -> list[float]:
    """Exponential moving average with the start-up bias removed (TensorBoard's smoothing):
    s_t = w s_{t-1} + (1 - w) x_t, divided by 1 - w^t so the first points are not pulled to 0."""
    out, acc = [], 0.0
    for t, x in enumerate(values, 1):
        acc = weight * acc + (1 - weight) * x
        out.append(acc / (1 - weight ** t))
    return out


def ema_weight(n_points: int) -> float:
    """A span of about a tenth of the curve: w = 1 - 2 / (span + 1), 0 for short curves."""
    span = n_points / 10
    return round(min(0.99, 1 - 2 / (span + 1)), 2) if span > 1 else 0.0


def draw_ppl_vs_sparsity(ax, runs):
    p = [r for r in pruned(runs) if r.ppl is not None]
    if not p:
        return "no pruned runs with a final perplexity"
    # One line per variant; a sweep with many taus would give one line per tau, so past
    # MAX_LINES the taus are merged and each point is the best run over them.  Seeds are
    # averaged (error bar: one standard deviation over seeds).
    merged = len({r.label for r in p}) > MAX_LINES
    pts = points(p, key=(lambda r: r.family) if merged else (lambda r: r.label))
    seeds = any_repeats(pts)
    for lab in sorted(pts):
        row = sorted(pts[lab].values(), key=lambda q: q.target)
        ax.errorbar([_pct(q.actual) for q in row], [q.mean for q in row], yerr=[q.sd for q in row] if seeds else None,
                    capsize=3, ms=4, **style.line_kw(lab))
    dense = dense_mean(runs)
    if dense is not None:
        ax.axhline(dense, label="dense fine-tuned", **style.DENSE_LINE)
    base = [r.ppl_dense for r in runs if r.ppl_dense is not None]
    if base:
        ax.axhline(base[0], label="before fine-tuning", **style.BEFORE_LINE)
    _log_y(ax)
    ax.set_xlabel("sparsity of the pruned weights (%)")
    ax.set_ylabel(f"{runs[0].split} perplexity, hard masks (log scale)")
    ax.set_title("Perplexity vs sparsity per method" + (" (best over tau)" if merged else "")
                 + (" (mean ± sd over seeds)" if seeds else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return None


def _tau_key(taus: list[float]):
    # A random sweep draws a new tau per trial; above 8 distinct values, bin to 1 significant digit.
    return (lambda t: t) if len(set(taus)) <= 8 else (lambda t: float(f"{t:.1g}"))


def draw_tau_heatmap(ax, runs):
    p = [r for r in runs if r.family == SHIPPED and r.ppl is not None]  # plain pdp: tau is all that differs
    key = _tau_key([r.tau for r in p])
    cells = {}
    for r in p:
        k = (key(r.tau), r.target)
        cells[k] = min(cells.get(k, math.inf), r.ppl)
    taus = sorted({k[0] for k in cells})
    if len(taus) < 2:  # one row says nothing about tau
        return "needs plain pdp runs at two or more tau values"
    sps = sorted({k[1] for k in cells})
    grid = [[cells.get((t, s), math.nan) for s in sps] for t in taus]
    finite = [v for row in grid for v in row if math.isfinite(v)]
    im = ax.imshow([[math.log10(v) if math.isfinite(v) else math.nan for v in row] for row in grid],
                   aspect="auto", cmap="viridis_r", origin="lower")
    lo, hi = math.log10(min(finite)), math.log10(max(finite))
    for i, row in enumerate(grid):
        for j, v in enumerate(row):
            if math.isfinite(v):
                dark = hi > lo and (math.log10(v) - lo) / (hi - lo) > 0.5
                ax.text(j, i, f"{v:.4g}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(sps)), [f"{_pct(s):g}" for s in sps])
    ax.set_yticks(range(len(taus)), [f"{t:g}" for t in taus])
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel("tau (dimensionless)")
    ax.set_title("PDP perplexity over tau x sparsity")
    ax.figure.colorbar(im, ax=ax, label="log10 perplexity")
    return None


def draw_masking_compare(ax, runs):
    p = [r for r in runs if r.method == SHIPPED and r.ppl is not None and not r.quantize and not r.custom_opt]
    std = {r.target: r.ppl for r in sorted(p, key=lambda r: -r.ppl) if not r.improved}
    imp = {r.target: r.ppl for r in sorted(p, key=lambda r: -r.ppl) if r.improved}
    sps = sorted(set(std) & set(imp))
    if not sps:
        return "needs pdp runs with and without --improved_masking at the same sparsity"
    xs = range(len(sps))
    w = 0.38
    ax.bar([x - w / 2 for x in xs], [std[s] for s in sps], w, label=f"{SHIPPED}: standard (sigmoid)",
           color=style.color(SHIPPED))
    ax.bar([x + w / 2 for x in xs], [imp[s] for s in sps], w, label=f"{SHIPPED}+improved (sigmoid + tanh)",
           color=style.color(f"{SHIPPED}+improved"))
    for x, s in zip(xs, sps):
        ax.text(x - w / 2, std[s], f"{std[s]:.3g}", ha="center", va="bottom", fontsize=7)
        ax.text(x + w / 2, imp[s], f"{imp[s]:.3g}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(list(xs), [f"{_pct(s):g}" for s in sps])
    _log_y(ax)
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel(f"{runs[0].split} perplexity (log scale)")
    ax.set_title("Standard vs improved masking (PDP)")
    ax.legend(fontsize=7)
    return None


def _short(name: str) -> str:
    return name.replace("transformer.", "").replace("model.", "").replace("layers.", "")


def draw_layer_bars(ax, runs):
    """Global allocation: the zeros per layer differ, so show them.  Layer-wise allocation puts
    every layer at the target, so the bars would all be equal: show what differs instead, the
    fraction of each layer's weights still in the soft band at the end (PDP runs only)."""
    rs = [r for r in focus_runs(runs) if r.prunes and r.layers][:5]
    if not rs:
        return "no pruned run with per-layer sparsity (summary.json 'layers')"
    # hard-mask baselines write a band of 0 everywhere: no bar to show
    banded = [r for r in rs if r.allocation != "global" and any(v > 0 for v in r.layer_band.values())]
    if all(r.allocation != "global" for r in rs) and banded:
        return _layer_band_bars(ax, banded)
    return _layer_sparsity_bars(ax, rs)


def _bars(ax, rs, names, value) -> None:
    w = 0.8 / len(rs)
    for i, r in enumerate(rs):
        xs = [j - 0.4 + w * (i + 0.5) for j in range(len(names))]
        ax.bar(xs, [value(r, n) for n in names], w, label=r.label, color=style.color(r.label),
               hatch="//" if "@" in r.label else None)
    ax.set_xticks(range(len(names)), [_short(n) for n in names], rotation=90, fontsize=6)
    ax.set_xlabel("layer")


def _layer_sparsity_bars(ax, rs):
    names = list(rs[0].layers)
    _bars(ax, rs, names, lambda r, n: _pct(r.layers.get(n, {}).get("sparsity", math.nan)))
    ax.axhline(_pct(rs[0].target), color="black", ls="--", lw=1, label="global target")
    ax.set_ylim(0, 125)  # headroom for the legend above the bars
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("zeros in the saved weight (%)")
    alloc = "global" if any(r.allocation == "global" for r in rs) else "layer-wise"
    ax.set_title(f"Per-layer sparsity at {_pct(rs[0].target):g}% target ({alloc} allocation)")
    ax.legend(fontsize=6, loc="upper center", ncol=3)
    return None


def _layer_band_bars(ax, rs):
    names = list(rs[0].layers)
    _bars(ax, rs, names, lambda r, n: _pct(r.layer_band.get(n, math.nan)))
    top = max((_pct(v) for r in rs for v in r.layer_band.values()), default=0.0)
    ax.set_ylim(0, max(top, 1e-3) * 1.35)  # headroom for the legend
    ax.set_ylabel("weights in the soft band 0.05 < m < 0.95 (%)")
    ax.set_title(f"Weights still undecided per layer at the end, {_pct(rs[0].target):g}% target\n"
                 "(layer-wise allocation: every layer is at the target sparsity)", fontsize=10)
    ax.legend(fontsize=6, loc="upper center", ncol=3)
    return None


def hist_run(runs):
    """The run whose mask histograms are shown: prefer plain pdp at the highest sparsity."""
    with_hist = [r for r in runs if r.hist and r.hist.get("moments")]
    if not with_hist:
        return None
    return max(with_hist, key=lambda r: (r.label == SHIPPED, r.family == SHIPPED, r.method == SHIPPED, r.target))


def draw_mask_hist(ax, runs):
    r = hist_run(runs)
    if r is None:
        return "no run has mask_hist.json (written by training runs of this version)"
    moments = r.hist["moments"]
    for i, m in enumerate(moments):
        edges, counts = m["edges"], m["counts"]
        frac = [c / max(m["n"], 1) for c in counts]
        ax.stairs([max(f, 1e-9) for f in frac], edges, color=plt.get_cmap("viridis")(i / max(1, len(moments) - 1)),
                  label=f"step {m['step']}/{m['max_steps']} (band {_pct(m['band']):.1f}%)", lw=1.4)
    ax.set_yscale("log")
    ax.set_ylim(1e-7, 1.5)
    ax.set_xlabel("soft-mask value m (0 = pruned, 1 = kept)")
    ax.set_ylabel("fraction of target weights (log scale)")
    ax.set_title(f"Mask values during training: {r.label} at {_pct(r.target):g}%")
    ax.legend(fontsize=7, loc="upper center")
    return None


def draw_loss(ax, runs):
    rs = [r for r in focus_runs(runs) if any(m.get("loss") is not None for m in r.metrics)]
    if not rs:
        return "no metrics.jsonl with a training loss"
    curves = [[(m["step"], m["loss"]) for m in r.metrics if m.get("loss") is not None] for r in rs]
    weight = ema_weight(max(len(c) for c in curves))
    for r, pts in zip(rs, curves):
        steps, loss = zip(*pts)
        c = style.color(r.label)
        ax.plot(steps, loss, color=c, lw=0.8, alpha=0.25)  # raw values, faint, behind the average
        ax.plot(steps, ema(list(loss), weight), color=c, lw=1.5, ls=style.linestyle(r.label),
                label=f"{r.label} {_pct(r.target):g}%")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Training loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, title_fontsize=7,
              title=f"EMA, weight {weight:g} (raw values faint)" if weight else "raw values (too few to smooth)")
    return None


def draw_sparsity_curves(ax, runs):
    rs = [r for r in focus_runs(runs) if any(m.get("sparsity_target") is not None for m in r.metrics)]
    if not rs:
        return "no metrics.jsonl with target/actual sparsity (dense runs have none)"
    for r in rs:
        ms = [m for m in r.metrics if m.get("sparsity_target") is not None and m.get("sparsity_hard") is not None]
        steps = [m["step"] for m in ms]
        c = style.color(r.label)
        ax.plot(steps, [_pct(m["sparsity_target"]) for m in ms], ls="--", color=c, lw=1)
        ax.plot(steps, [_pct(m["sparsity_hard"]) for m in ms], color=c, lw=1.4, label=r.label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("sparsity (%): dashed target, solid actual")
    ax.set_title("Target vs actual sparsity")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return None


# name -> (title, draw functions drawn side by side, figure size in inches)
PLOTS = {
    "ppl_vs_sparsity": ("Perplexity vs sparsity", [draw_ppl_vs_sparsity], (7, 4.5)),
    "tau_heatmap": ("tau x sparsity heatmap", [draw_tau_heatmap], (6, 4.5)),
    "masking": ("Standard vs improved masking", [draw_masking_compare], (6, 4.5)),
    "layer_sparsity": ("Per-layer sparsity", [draw_layer_bars], (9, 4.8)),
    "mask_hist": ("Soft-mask histograms", [draw_mask_hist], (7, 4.5)),
    "training_curves": ("Training curves", [draw_loss, draw_sparsity_curves], (12, 4.5)),
}
# Each dashboard panel is the first of its alternatives that has data.
DASHBOARD = [[draw_ppl_vs_sparsity], [draw_sparsity_curves], [draw_loss], [draw_layer_bars], [draw_mask_hist],
             [draw_tau_heatmap, draw_masking_compare]]


def _no_data(ax, draw, reason: str) -> None:
    ax.axis("off")
    ax.text(0.5, 0.5, f"{draw.__name__[5:]}:\n{reason}", ha="center", va="center", fontsize=9, wrap=True)


def plot_figure(name: str, runs):
    """(figure, None), or (None, reason) when none of the plot's panels has data."""
    _, draws, size = PLOTS[name]
    fig, axes = plt.subplots(1, len(draws), figsize=size, squeeze=False)
    reasons = [draw(ax, runs) for ax, draw in zip(axes[0], draws)]
    if all(reasons):
        plt.close(fig)
        return None, "; ".join(reasons)
    for ax, draw, reason in zip(axes[0], draws, reasons):
        if reason:
            _no_data(ax, draw, reason)
    fig.tight_layout()
    return fig, None


def save_plot(name: str, runs, path) -> str | None:
    """Write one PNG; returns the reason instead (nothing written) if none of its panels has data."""
    fig, reason = plot_figure(name, runs)
    if fig is None:
        return reason
    try:
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return None


def dashboard_figure(runs, title: str, lines: list[str]):
    """One page: the six main panels plus a text box with the headline numbers."""
    fig, axes = plt.subplots(2, 3, figsize=(18, 10.5))
    for ax, choices in zip(axes.flat, DASHBOARD):
        reasons = []
        for draw in choices:  # the draw functions check their data before drawing anything
            reasons.append(draw(ax, runs))
            if not reasons[-1]:
                break
        if reasons[-1]:
            _no_data(ax, choices[-1], "\nor ".join(reasons))
    fig.suptitle(title, fontsize=14)
    fig.text(0.01, 0.005, "   |   ".join(lines), fontsize=8, family="monospace", va="bottom")
    fig.tight_layout(rect=(0, 0.03, 1, 0.96))
    return fig


def save_dashboard(runs, path, title: str, lines: list[str]) -> None:
    fig = dashboard_figure(runs, title, lines)
    try:
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
