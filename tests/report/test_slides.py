"""slides.pdf and the report's look: page counts, titles computed from the data, one colour per
method in every figure, smoothed loss curves, per-layer plots that say something."""
import json
import random
import re

import matplotlib.colors as mcolors
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from pdp_gpt2.cli import main
from pdp_gpt2.report import findings, plots, slides, style
from pdp_gpt2.report.report import collect, headline, seeds_table

LAYERS = [f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "mlp.c_fc")]
# variant -> (train flags in summary.json's config, {sparsity: perplexity of seed 0})
BENCH = {
    "magnitude": ({"method": "magnitude"}, {0.5: 125.4, 0.9: 134.6}),
    "gmp": ({"method": "gmp"}, {0.5: 124.9, 0.9: 133.2}),
    "pdp": ({"method": "pdp"}, {0.5: 124.6, 0.9: 127.8}),
    "pdp+improved": ({"method": "pdp", "improved_masking": True}, {0.9: 128.2}),
    "pdp+q8": ({"method": "pdp", "quantize": True}, {0.9: 127.5}),
}


def _write_run(root, name, method, sparsity, ppl, *, seed=0, tau=0.02, pdp=None, alloc="layer", gap=0.001,
               steps=60):
    """A run directory as `pdp-gpt2 train` writes it (summary.json, metrics.jsonl, layers.md)."""
    d = root / name
    d.mkdir(parents=True)
    target = 0.0 if method == "dense" else sparsity
    band = {n: 0.001 * (i + 1) if method == "pdp" else 0.0 for i, n in enumerate(LAYERS)}
    spars = {n: target + (0.04 * (i - 1.5) if alloc == "global" else 0.0) for i, n in enumerate(LAYERS)}
    p = {"tau": tau, "improved_masking": False, "quantize": False, "bits": 8, "pattern": "unstructured",
         "allocation": alloc, **(pdp or {})}
    summary = {
        "method": method, "model": "embedded", "dataset": "shakespeare", "eval_split": "test",
        "sparsity_target": target, "sparsity_actual": target, "perplexity": ppl, "perplexity_dense": 125.3,
        "perplexity_soft": None if method == "dense" else ppl / (1 + gap), "soft_hard_gap": None if method == "dense"
        else gap, "tau": tau, "train_steps": steps, "ramp_steps": steps // 2, "train_seconds": 50.0,
        "target_weights": 4000, "layers": {n: {"zeros": int(1000 * spars[n]), "numel": 1000, "sparsity": spars[n]}
                                           for n in LAYERS},
        "config": {"seed": seed, "batch_size": 8, "max_length": 128, "learning_rate": 5e-4,
                   "custom_optimizer": False, "pdp": p},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    rng = random.Random(seed * 1000 + len(name))
    lines = [{"step": s, "loss": 5.0 - s / 30 + rng.uniform(-0.3, 0.3),
              **({} if method == "dense" else {"sparsity_target": target * min(1, s / 30),
                                               "sparsity_hard": target * min(1, s / 30), "band": 0.2 / s})}
             for s in range(1, steps + 1)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = ["| layer | weights | zeros | sparsity | soft band at end |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {n} | 1000 | {int(1000 * spars[n])} | {spars[n]:.4f} | "
             f"{band[n]:.4f} |" for n in LAYERS]  # hard-mask baselines write 0.0000, dense too
    (d / "layers.md").write_text("\n".join(rows) + "\n")
    return d


def bench(root, seeds=(0,), taus=(), anneal=False):
    """The benchmark's layout: dense, baselines, pdp + extensions; optional seeds, tau grid, annealed tau."""
    for k in seeds:
        _write_run(root, f"dense-seed{k}", "dense", 0.0, 124.2 + 0.1 * k, seed=k)
    for v, (flags, ppls) in BENCH.items():
        extra = {f: x for f, x in flags.items() if f != "method"}
        for s, ppl in ppls.items():
            for k in (seeds if v in ("gmp", "pdp") else (0,)):
                _write_run(root, f"{v}-s{round(100 * s)}-seed{k}", flags["method"], s, ppl + 0.3 * k, seed=k, pdp=extra)
    for t in taus:
        _write_run(root, f"pdp-tau{t:g}-s90-seed0", "pdp", 0.9, 128 + 30 * abs(t - 0.05), tau=t, gap=t / 10)
    if anneal:
        for s, ppl in ((0.5, 124.5), (0.9, 126.0)):
            _write_run(root, f"pdp-anneal-s{round(100 * s)}-seed0", "pdp", s, ppl, tau=0.1,
                       pdp={"tau_schedule": "exp", "tau_final": 0.001})
    return root


def _pages(pdf) -> int:
    """Page objects in the file itself (matplotlib writes them uncompressed)."""
    return len(re.findall(rb"/Type\s*/Page\b(?!s)", pdf.read_bytes()))


def test_slides_pdf_has_a_slide_per_finding_and_titles_state_the_numbers(tmp_path):
    runs_dir = bench(tmp_path / "runs", seeds=(0, 1, 2), taus=(0.005, 0.08, 0.3))
    cost = tmp_path / "step.json"
    cost.write_text(json.dumps({"model": "gpt2", "batch": 4, "seq": 128, "device": "cpu",
                                "time": {"wall": {"ratio_paired": {"pdp": 1.05, "gmp": 1.14}}},
                                "memory": {"ratio": {"pdp": 1.13, "gmp": 1.14}}}))
    runs, _ = collect([runs_dir])
    pdf = tmp_path / "slides.pdf"
    res = slides.write_slides(runs, pdf, "My deck", "30 Nov", findings.load_cost([cost]))
    assert pdf.read_bytes()[:5] == b"%PDF-" and _pages(pdf) == res["pages"] == 7  # cover + 6 findings
    assert res["skipped"] == [] and pdf.stat().st_size < 3 * 2 ** 20
    figs, skipped = slides.build(runs, "My deck", "30 Nov", findings.load_cost([cost]))
    try:
        titles = [fig.texts[0].get_text().replace("\n", " ") for fig in figs]
    finally:
        for fig in figs:
            slides.plt.close(fig)
    assert skipped == [] and titles[0] == "My deck" and figs[0].texts[1].get_text() == "30 Nov"
    # pdp 127.8/128.1/128.4 (mean 128.1) vs gmp 133.2/133.5/133.8 (mean 133.5): 4.04% below
    assert titles[2] == "PDP is 4.0% below GMP at 90%"
    assert titles[1].startswith("At 90% sparsity pdp+q8 is best: perplexity 127.50")
    assert titles[3].startswith("τ = 0.02 is best at 90% (128.10); τ = 0.3 leaves a 3.0% soft-to-hard gap")
    assert titles[4] == "The extensions move perplexity by at most 0.47% (best at 90%: pdp+q8, -0.47%)"
    assert titles[5].startswith("A PDP training step costs 1.05× dense")
    assert titles[6] == "No baseline beats PDP in 4 comparison(s); it still trails dense by 3.1% at 90%"
    head, rows = seeds_table(runs)  # the report's table of the seed spread
    assert ["pdp", "90", "3", "128.10", "0.30", "0: 127.80, 1: 128.10, 2: 128.40"] in rows


def test_slides_with_missing_data_are_skipped_and_listed_on_the_cover(tmp_path, png_stand_ins):
    _write_run(tmp_path / "runs", "dense", "dense", 0.0, 124.0)
    _write_run(tmp_path / "runs", "gmp", "gmp", 0.9, 133.0)
    out = tmp_path / "rep"
    assert main(["report", str(tmp_path / "runs"), "--out", str(out), "--title", "Two runs", "--note", "n"]) == 0
    pdf = (out / "slides.pdf").read_bytes()
    assert _pages(out / "slides.pdf") == 2 and b"/Title (Two runs)" in pdf  # cover + perplexity vs sparsity
    md = (out / "report.md").read_text()
    assert "slides.pdf: 2 slides." in md and [s.split(":")[0] for s in re.findall(r"Slide not made: ([^.]*)", md)] \
        == ["PDP vs the best baseline", "The τ picture", "The extensions", "Cost", "Where we lose"]
    runs, _ = collect([tmp_path / "runs"])
    figs, _ = slides.build(runs, "t")
    cover_text = " ".join(t.get_text() for t in figs[0].texts)
    for fig in figs:
        slides.plt.close(fig)
    assert "Not in this deck (no data): PDP vs the best baseline: needs plain pdp runs" in cover_text
    assert "Slide not made: Cost: no cost inputs" in md


def test_annealed_tau_gets_the_tau_slide(tmp_path):
    runs, _ = collect([bench(tmp_path / "runs", anneal=True)])
    assert "pdp+tau-exp" in {r.label for r in runs}
    f = findings.tau_picture(runs)
    assert f["kind"] == "schedule"
    assert f["title"] == "Annealing τ from 0.1 to 0.001 (exp) gives 1.4% lower perplexity at 90%"  # 126.0 vs 127.8
    assert "pdp+tau-exp" not in findings.extensions(runs)["deltas"]  # on the tau slide, not with the extensions


def _legend_colours(fig) -> list[tuple[str, str]]:
    """(label, colour) of every legend entry the figure's axes carry."""
    out = []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if isinstance(h, ErrorbarContainer):
                c = h.lines[0].get_color()
            elif isinstance(h, BarContainer):
                c = h.patches[0].get_facecolor()
            elif hasattr(h, "get_color") and not hasattr(h, "get_facecolor"):
                c = h.get_color()
            else:
                c = h.get_facecolor()
            c = c[0] if hasattr(c, "ndim") and c.ndim == 2 else c
            out.append((lab, mcolors.to_hex(c)))
    return out


def test_one_method_keeps_one_colour_in_every_figure(tmp_path):
    runs, _ = collect([bench(tmp_path / "runs", seeds=(0, 1), taus=(0.08,), anneal=True)])
    _write_run(tmp_path / "more", "wanda-s90", "wanda", 0.9, 131.0)
    runs += collect([tmp_path / "more"])[0]
    figs = [plots.plot_figure(name, runs)[0] for name in plots.PLOTS]
    figs.append(plots.dashboard_figure(runs, "t", headline(runs)))
    deck, _ = slides.build(runs, "t")
    figs += deck
    labels = {r.label for r in runs}
    seen: dict[str, set] = {}
    try:
        for fig in filter(None, figs):
            for lab, c in _legend_colours(fig):
                key = lab.split()[0].rstrip(":")  # 'pdp 90%', 'pdp: standard (sigmoid)' -> 'pdp'
                if key in labels:
                    seen.setdefault(key, set()).add(c)
    finally:
        for fig in filter(None, figs):
            slides.plt.close(fig)
    for method in ("dense", "pdp", "gmp", "magnitude", "wanda", "pdp+improved", "pdp+tau-exp"):
        assert seen.get(method) == {mcolors.to_hex(style.color(method))}, method
    assert len({style.color(m) for m in ("dense", "pdp", "gmp", "magnitude", "wanda")}) == 5
    assert style.color("pdp@tau=0.08") == style.color("pdp") and style.linestyle("pdp@tau=0.08") == "--"
    assert style.color("future-method") == style.color("future-method")  # hashed, not positional


def test_loss_curves_are_an_ema_over_faint_raw_values(tmp_path):
    by_hand = [1.0, 1.75 / 0.75, (0.125 * 1 + 0.25 * 3 + 0.5 * 3) / 0.875]  # weights 0.5^k, over 1 - 0.5^t
    assert plots.ema([1.0, 3.0, 3.0], 0.5) == pytest.approx(by_hand)
    assert plots.ema([2.0, 4.0], 0.0) == [2.0, 4.0] and plots.ema_weight(60) == 0.71 and plots.ema_weight(8) == 0.0
    runs, _ = collect([bench(tmp_path / "runs")])
    fig = slides.plt.figure()
    ax = fig.add_subplot()
    try:
        assert plots.draw_loss(ax, runs) is None
        raw = [ln for ln in ax.get_lines() if ln.get_alpha() == 0.25]
        smooth = [ln for ln in ax.get_lines() if ln.get_alpha() is None]
        assert len(raw) == len(smooth) > 1
        assert list(smooth[0].get_ydata()) == pytest.approx(plots.ema(list(raw[0].get_ydata()), 0.71))
        assert ax.get_legend().get_title().get_text() == "EMA, weight 0.71 (raw values faint)"
    finally:
        slides.plt.close(fig)


def _bar_heights(ax) -> dict[str, list[float]]:
    return {c.get_label(): [round(p.get_height(), 6) for p in c.patches] for c in ax.containers}


@pytest.mark.parametrize("alloc", ["layer", "global"])
def test_per_layer_plot_shows_band_under_layer_allocation_and_sparsity_under_global(tmp_path, alloc):
    _write_run(tmp_path / "runs", "pdp", "pdp", 0.9, 128.0, alloc=alloc)
    _write_run(tmp_path / "runs", "gmp", "gmp", 0.9, 133.0, alloc=alloc)
    runs, _ = collect([tmp_path / "runs"])
    fig = slides.plt.figure()
    ax = fig.add_subplot()
    try:
        assert plots.draw_layer_bars(ax, runs) is None
        bars = _bar_heights(ax)
        label = "pdp+global" if alloc == "global" else "pdp"
        if alloc == "layer":  # the band per layer, read from layers.md (0.1%, 0.2%, ...); gmp has no soft band
            assert "soft band" in ax.get_ylabel() and bars == {"pdp": [0.1, 0.2, 0.3, 0.4]}
        else:
            assert "zeros" in ax.get_ylabel() and bars[label] == [84.0, 88.0, 92.0, 96.0]
    finally:
        slides.plt.close(fig)


def test_cost_inputs_are_read_by_shape_and_bad_ones_are_one_line(tmp_path, capsys):
    size = tmp_path / "size_report.json"
    size.write_text(json.dumps({"format": "compressed", "pruned_tensors": 16, "encodings": {},
                                "target_weights": {"dense_bytes": 1000, "exported_bytes": 150, "ratio": 0.15},
                                "whole_model": {"dense_bytes": 4000, "exported_bytes": 1000, "ratio": 0.25}}))
    speed = tmp_path / "speed.json"
    speed.write_text(json.dumps({"speed": {"exported": 1.0, "csr": 1.6}}))
    cost = findings.load_cost([size, speed])
    assert findings.cost_title(cost) == "The compressed export is 0.25× the dense size; csr runs at 1.60× dense speed"
    fig = slides.cost_slide(cost)
    try:
        heights = [[round(p.get_height(), 4) for p in ax.patches] for ax in fig.axes]
    finally:
        slides.plt.close(fig)
    assert heights == [[0.15, 0.25], [1.0, 1.6]]
    assert slides.cost_slide({}).startswith("no cost inputs")
    bad = tmp_path / "bad.json"
    bad.write_text('{"neither": 1}')
    _write_run(tmp_path / "runs", "gmp", "gmp", 0.9, 133.0)
    for arg, needle in ((bad, "not a step_overhead, size_report or speed JSON"),
                        (tmp_path / "nope.json", "no such file")):
        assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep"), "--cost", str(arg)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
    assert not (tmp_path / "rep").exists()


def test_a_benchmark_of_the_shipped_defaults_compares_them(tmp_path):
    """No constant-tau pdp runs (benchmark v3): the findings take PDP as shipped ('pdp+tau-exp') as
    PDP itself, its extensions against it, and distilled baselines against distilled PDP."""
    from pdp_gpt2.report.labels import shipped_label

    root = tmp_path / "runs"
    shipped = {"tau_schedule": "exp", "tau_final": 0.001}
    assert shipped_label() == "pdp+tau-exp"
    for k in range(2):
        _write_run(root, f"pdp-s95-seed{k}", "pdp", 0.95, 105.0 + k, seed=k, tau=0.1, pdp=shipped)
        _write_run(root, f"gmp-s95-seed{k}", "gmp", 0.95, 108.0 + k, seed=k)
        _write_run(root, f"movement-s95-seed{k}", "movement", 0.95, 112.0 + k, seed=k)
        _write_run(root, f"pdpd-s95-seed{k}", "pdp", 0.95, 101.0 + k, seed=k, tau=0.1, pdp=shipped)
        _write_run(root, f"gmpd-s95-seed{k}", "gmp", 0.95, 100.0 + k, seed=k)
    for name in ("pdpd-s95-seed0", "pdpd-s95-seed1", "gmpd-s95-seed0", "gmpd-s95-seed1"):  # distilled
        s = json.loads((root / name / "summary.json").read_text())
        s["config"]["distill"] = 0.9
        (root / name / "summary.json").write_text(json.dumps(s))
    _write_run(root, "pdp+q8-s95-seed0", "pdp", 0.95, 104.0, tau=0.1, pdp={**shipped, "quantize": True})
    runs, _ = collect([root])
    best = findings.pdp_vs_best(runs)
    assert best["title"] == "PDP is 2.8% below GMP at 95%"  # 105.5 vs 108.5, distilled runs aside
    ext = findings.extensions(runs)
    assert set(ext["deltas"]) == {"pdp+q8+tau-exp"} and ext["deltas"]["pdp+q8+tau-exp"][0.95] == pytest.approx(
        100 * (104.0 / 105.5 - 1))
    lose = findings.losses(runs, {})
    # gmp+distill (100.5) beats distilled pdp (101.5): it is compared with it, not with plain pdp (105.5)
    assert any(line.startswith("gmp+distill beats pdp at 95%: pdp is +1.00%") for line in lose["lines"])
