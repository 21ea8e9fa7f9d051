"""The numbers each slide states, computed from the runs (and optional cost files).

Every function returns a small dict (the finding, worded as a slide title, plus what the
chart needs) or a one-line reason why the runs cannot say it; the slides draw from here,
so a title and its chart always come from the same numbers.
"""
from __future__ import annotations

import json
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.report import methods
from pdp_gpt2.report.labels import shipped_label
from pdp_gpt2.report.methods import SHIPPED, is_baseline, method_of
from pdp_gpt2.report.stats import Point, dense_mean, points, rel

# The findings are about the shipped method (pdp); its baselines are every other pruning method the
# registry knows, plugins included (methods.is_baseline); titles name methods by their registered label.
NAME = methods.title(SHIPPED)  # 'PDP'


def _pct(x: float) -> str:
    return f"{100 * x:g}%"


def _pruned_points(runs) -> dict[str, dict[float, Point]]:
    return points([r for r in runs if r.prunes and r.target > 0])


def dense_ppl(runs) -> float | None:
    return dense_mean(runs)


def plain(pts) -> str | None:
    """The label that stands for PDP itself among these points: 'pdp' (constant τ 0.02, the
    labels' reference) when such runs are there, else the label of PDP as the package ships it
    ('pdp+tau-exp'): a benchmark of the shipped defaults has no constant-τ runs.  None: neither."""
    if SHIPPED in pts:
        return SHIPPED
    shipped = shipped_label()
    return shipped if shipped in pts else None


def _shipped_variant(label: str, ref: str = SHIPPED) -> bool:
    """'pdp+improved', 'pdp@tau=0.05', ...: the shipped method with something changed."""
    return method_of(label) == SHIPPED and label != ref


def _extension(label: str, ref: str) -> bool:
    """``label`` is ``ref`` plus one extension (improved masking, quantization, ...), not a τ setting."""
    if "@" in label or "@" in ref or method_of(label) != SHIPPED:
        return False
    extra = [x for x in label.split("+") if x not in ref.split("+")]
    missing = [x for x in ref.split("+") if x not in label.split("+")]
    return len(extra) == 1 and not missing and not extra[0].startswith("tau-") and extra[0] != "distill"


def top_sparsity(runs) -> dict | str:
    """The best variant at the highest target sparsity."""
    pts = _pruned_points(runs)
    if not pts:
        return "no pruned runs with a final perplexity"
    top = max(t for by in pts.values() for t in by)
    at = [by[top] for by in pts.values() if top in by]
    best = min(at, key=lambda p: p.mean)
    d = dense_ppl(runs)
    tail = f", {rel(best.mean, d):+.1f}% vs dense fine-tuned" if d else ""
    return {"title": f"At {_pct(top)} sparsity {best.label} is best: perplexity {best.mean:.2f}{tail}",
            "top": top, "best": best}


def pdp_vs_best(runs) -> dict | str:
    """Plain PDP against the best plain baseline at the highest sparsity both reached."""
    pts = _pruned_points(runs)
    base = {lab: by for lab, by in pts.items() if method_of(lab) == lab and is_baseline(lab)}
    ref = plain(pts)
    if ref is None or not base:
        return f"needs plain {SHIPPED} runs and a baseline (magnitude, gmp, wanda, ...) at the same sparsity"
    shared = [t for t in pts[ref] if any(t in by for by in base.values())]
    if not shared:
        return f"{SHIPPED} and the baselines share no target sparsity"
    top = max(shared)
    pdp = pts[ref][top]
    rivals = sorted((by[top] for by in base.values() if top in by), key=lambda p: p.mean)
    # PDP's other settings with repeats at this sparsity (a tau schedule, say) stand next to it
    others = [by[top] for lab, by in sorted(pts.items())
              if _shipped_variant(lab, ref) and "distill" not in lab.split("+") and top in by and by[top].n > 1]
    best = rivals[0]
    d = rel(pdp.mean, best.mean)
    word = "below" if d < 0 else "above"
    heading = f"{NAME} is {abs(d):.1f}% {word} {methods.title(best.label)} at {_pct(top)}"
    if min(pdp.n, best.n) > 1:
        sub = f"mean ± sd over seeds ({SHIPPED} {pdp.n}, {best.label} {best.n}); each dot is one seed"
        spread = max(pdp.sd, best.sd)
        if spread:
            sub += f"; the gap is {abs(pdp.mean - best.mean) / spread:.1f}× the larger seed sd"
    else:
        sub = "one seed per method: the spread between seeds is not measured"
    return {"title": heading, "sub": sub, "top": top, "points": [pdp, *others, *rivals], "delta": d}


def tau_picture(runs) -> dict | str:
    """Either a tau grid (plain pdp at several constant taus at one sparsity) or a tau schedule
    (a 'pdp+tau-...' variant) against plain pdp; the grid wins when both are there."""
    grid = _tau_grid(runs)
    if grid:
        return grid
    pts = _pruned_points(runs)
    sched = {lab: by for lab, by in pts.items() if method_of(lab) == SHIPPED and "tau-" in lab}
    deltas = {lab: {t: rel(p.mean, pts[SHIPPED][t].mean) for t, p in by.items() if t in pts[SHIPPED]}
              for lab, by in sched.items()} if SHIPPED in pts else {}
    deltas = {lab: d for lab, d in deltas.items() if d}
    if not deltas:
        return ("needs plain pdp runs at two or more tau values at one sparsity, or a tau schedule "
                "(pdp+tau-...) next to plain pdp")
    top = max(t for d in deltas.values() for t in d)
    lab = min((lab for lab in deltas if top in deltas[lab]), key=lambda lab: deltas[lab][top])
    d = deltas[lab][top]
    r0 = sched[lab][top].runs[0]
    how = f"from {r0.tau:g} to {r0.pdp.get('tau_final', '?')} ({r0.pdp.get('tau_schedule')})"
    title = f"Annealing τ {how} gives {abs(d):.1f}% {'lower' if d < 0 else 'higher'} perplexity at {_pct(top)}"
    gaps = [(p, _mean_gap(p)) for by in sched.values() for p in by.values()]
    worst = max((g for _, g in gaps if g is not None), default=None)
    sub = "relative to plain pdp (constant τ) at the same sparsity; right: weights in the soft band during training"
    if worst is not None:
        sub += f"; the annealed runs' soft-to-hard gap is at most {100 * worst:+.2f}%"
    return {"kind": "schedule", "title": title, "sub": sub, "deltas": deltas, "top": top}


def _tau_grid(runs) -> dict | None:
    pdp = [r for r in runs if r.family == SHIPPED and r.ppl is not None]
    pts = points(pdp, key=lambda r: f"{r.tau:g}")
    by_target: dict[float, list[Point]] = {}
    for by in pts.values():
        for t, p in by.items():
            by_target.setdefault(t, []).append(p)
    if not by_target or max(len(v) for v in by_target.values()) < 2:
        return None
    target = max(by_target, key=lambda t: (len(by_target[t]), t))
    row = sorted(by_target[target], key=lambda p: float(p.label))
    best = min(row, key=lambda p: p.mean)
    gaps = [(p, _mean_gap(p)) for p in row]
    gaps = [(p, g) for p, g in gaps if g is not None]
    title = f"τ = {best.label} is best at {_pct(target)} ({best.mean:.2f})"
    if gaps:
        worst, g = max(gaps, key=lambda x: x[1])
        if g > 0.005:
            title += f"; τ = {worst.label} leaves a {100 * g:.1f}% soft-to-hard gap"
        else:
            title += f"; every τ keeps the soft-to-hard gap at or under {100 * max(g, 0.0):.2f}%"
    sub = ("τ is the soft mask's temperature: larger τ keeps more weights undecided; the gap is "
           "hard-pruned / soft-masked perplexity - 1")
    return {"kind": "grid", "title": title, "sub": sub, "target": target, "row": row, "gaps": gaps}


def _mean_gap(p: Point) -> float | None:
    g = [r.summary.get("soft_hard_gap") for r in p.runs]
    g = [x for x in g if isinstance(x, (int, float))]
    return sum(g) / len(g) if g else None


def extensions(runs) -> dict | str:
    """Each pdp extension against plain pdp at the same sparsity, in percent."""
    pts = _pruned_points(runs)
    ref = plain(pts)
    if ref is None:
        return f"needs plain {SHIPPED} runs to compare the extensions with"
    ext = {lab: by for lab, by in pts.items() if _extension(lab, ref)}  # tau settings are on the tau slide
    deltas = {lab: {t: rel(p.mean, pts[ref][t].mean) for t, p in by.items() if t in pts[ref]}
              for lab, by in ext.items()}
    deltas = {lab: d for lab, d in deltas.items() if d}
    if not deltas:
        return "needs pdp runs with an extension (improved masking, quantization, ...) next to plain pdp"
    top = max(t for d in deltas.values() for t in d)
    at_top = {lab: d[top] for lab, d in deltas.items() if top in d}
    best = min(at_top, key=at_top.get)
    biggest = max(abs(v) for d in deltas.values() for v in d.values())
    if biggest < 1.0:
        title = (f"The extensions move perplexity by at most {biggest:.2f}%"
                 f" (best at {_pct(top)}: {best}, {at_top[best]:+.2f}%)")
    else:
        title = f"{best} is the best extension at {_pct(top)}: {at_top[best]:+.1f}% vs plain {NAME}"
    return {"title": title, "deltas": deltas}


def load_cost(paths: list[str | Path]) -> dict:
    """Merge the cost inputs: a `benchmarks/step_overhead.py` JSON (time and memory ratios to dense),
    an export's `size_report.json` (bytes), or {"speed": {variant: speed ratio to dense}}."""
    cost: dict = {}
    for p in map(Path, paths or []):
        try:
            d = json.loads(p.read_text())
        except FileNotFoundError:
            raise UsageError(f"--cost {p}: no such file") from None
        except (OSError, ValueError) as e:
            raise UsageError(f"--cost {p}: not a readable JSON file ({str(e).splitlines()[0]})") from None
        if not isinstance(d, dict):
            raise UsageError(f"--cost {p}: expected a JSON object")
        t = d.get("time")
        if isinstance(t, dict) and isinstance(t.get("wall"), dict):
            w = t["wall"]
            cost["step"] = {"ratio": w.get("ratio_paired") or w.get("ratio") or {}, "model": d.get("model"),
                            "batch": d.get("batch"), "seq": d.get("seq"), "device": d.get("device"),
                            "memory": (d.get("memory") or {}).get("ratio") or {}}
        elif isinstance(d.get("target_weights"), dict) and isinstance(d.get("whole_model"), dict):
            cost["size"] = {"format": d.get("format", "?"), "target": d["target_weights"], "whole": d["whole_model"]}
        elif isinstance(d.get("speed"), dict):
            cost["speed"] = d["speed"]
        else:
            raise UsageError(f"--cost {p}: not a step_overhead, size_report or speed JSON")
    return cost


def cost_title(cost: dict) -> str | None:
    parts = []
    step = cost.get("step", {}).get("ratio", {})
    if SHIPPED in step:
        parts.append(f"a {NAME} training step costs {step[SHIPPED]:.2f}× dense")
    if "size" in cost:
        parts.append(f"the {cost['size']['format']} export is {cost['size']['whole']['ratio']:.2f}× the dense size")
    if cost.get("speed"):
        fast = max(cost["speed"], key=cost["speed"].get)
        parts.append(f"{fast} runs at {cost['speed'][fast]:.2f}× dense speed")
    if not parts:
        return None
    text = "; ".join(parts)
    return text[0].upper() + text[1:]


def losses(runs, cost: dict) -> dict | str:
    """Where PDP does worse: baselines that beat it, its distance to dense, soft-to-hard gaps, cost."""
    pts = _pruned_points(runs)
    ref = plain(pts)
    if ref is None:
        return f"needs plain {SHIPPED} runs"
    ours = pts[ref]

    def ours_for(lab: str) -> dict:  # a distilled baseline meets distilled PDP where there is one
        if "distill" in lab.split("+") and f"{ref}+distill" in pts:
            return pts[f"{ref}+distill"]
        return ours

    rivals = {lab: by for lab, by in sorted(pts.items()) if is_baseline(method_of(lab))}
    lines, lost = [], []
    for lab, by in rivals.items():
        for t, p in sorted(by.items()):
            q = ours_for(lab).get(t)
            if q and p.mean <= q.mean:
                lost.append((rel(q.mean, p.mean), lab, t))
    for d, lab, t in sorted(lost, reverse=True):
        lines.append(f"{lab} beats {SHIPPED} at {_pct(t)}: {SHIPPED} is {d:+.2f}%")
    for lab, by in rivals.items():  # where PDP wins, the closest call per baseline
        mine = ours_for(lab)
        won = [(rel(mine[t].mean, p.mean), t) for t, p in by.items() if t in mine and mine[t].mean < p.mean]
        if won:
            d, t = max(won)
            lines.append(f"closest win over {lab}: {_pct(t)}, {SHIPPED} {d:+.2f}%")
    for lab, by in sorted(pts.items()):
        if method_of(lab) == SHIPPED:
            for t, p in sorted(by.items()):
                g = _mean_gap(p)
                if g is not None and g > 0.01:
                    lines.append(f"{lab} at {_pct(t)}: soft-to-hard gap {100 * g:+.1f}% (perplexity jumps at finalize)")
    d = dense_ppl(runs)
    top = max(ours)
    if d:
        lines.append(f"{SHIPPED} at {_pct(top)} is {rel(ours[top].mean, d):+.1f}% vs dense fine-tuned")
    step = cost.get("step", {}).get("ratio", {})
    if step.get(SHIPPED, 1.0) > 1.0:
        lines.append(f"each {NAME} training step costs {step[SHIPPED]:.2f}× a dense step")
    if all(p.n == 1 for by in pts.values() for p in by.values()):
        lines.append("one seed per point: margins smaller than the run-to-run noise are not established")
    if lost:
        d0, lab, t = max(lost)
        heading = f"{NAME} loses to {lab} in {len(lost)} comparison(s); worst at {_pct(t)}: {d0:+.2f}%"
    else:
        n = sum(1 for lab, by in rivals.items() for t in by if t in ours_for(lab))
        heading = f"No baseline beats {NAME} in {n} comparison(s)" + (
            f"; it still trails dense by {rel(ours[top].mean, d):.1f}% at {_pct(top)}" if d else "")
    return {"title": heading, "lines": lines}
