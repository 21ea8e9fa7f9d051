"""lm-eval task scores in the report and the deck, next to the perplexity.

A run made with ``train --eval_tasks`` carries its scores in summary.json (``lm_eval``:
``{"task/metric": value}``, data/lmeval.py's ``scores``, stderr left out) and the full result in
lm_eval.json beside it, whose ``higher_is_better`` says which way each metric points.  The table
has one row per variant and target sparsity, over the same runs the perplexity plots average
(stats.points: the best run per seed, then the mean over seeds).  Where no run has scores, nothing
here adds to the report or the deck, not even a "slide not made" line.
"""
from __future__ import annotations

import json
import math
import statistics
from collections import Counter

from pdp_gpt2.report.stats import Point, points

# Which way a metric points when no lm_eval.json says so: lm-eval's perplexity-like metrics
# (word_perplexity, byte_perplexity, bits_per_byte) are lower-is-better, the rest (acc, f1, ...) higher.
LOWER_IS_BETTER = ("perplexity", "bits_per_byte")


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def scores(run) -> dict[str, float]:
    """{'task/metric': value} of a run (empty for a run made without --eval_tasks)."""
    raw = run.summary.get("lm_eval")
    if not isinstance(raw, dict):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(k, str) and "/" in k and _num(v)}


def metric_names(runs) -> list[str]:
    return sorted({m for r in runs for m in scores(r)})


def higher_is_better(runs) -> dict[str, bool]:
    """{'task/metric': True when higher is better}, from the runs' lm_eval.json (a missing or damaged
    file costs only the arrow: the name decides then, see :func:`higher`)."""
    out: dict[str, bool] = {}
    for r in runs:
        if not scores(r):
            continue
        try:
            data = json.loads((r.dir / "lm_eval.json").read_text())
        except (OSError, ValueError):
            continue
        hib = data.get("higher_is_better") if isinstance(data, dict) else None
        for task, metrics in (hib.items() if isinstance(hib, dict) else ()):
            for metric, up in (metrics.items() if isinstance(metrics, dict) else ()):
                if isinstance(up, bool):
                    out.setdefault(f"{task}/{metric}", up)
    return out


def higher(metric: str, known: dict[str, bool]) -> bool:
    if metric in known:
        return known[metric]
    return not any(w in metric.rsplit("/", 1)[-1] for w in LOWER_IS_BETTER)


def _values(p: Point, metric: str) -> list[float]:
    return [s[metric] for s in map(scores, p.runs) if metric in s]


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _rows(runs) -> list[tuple[float, str, Point]]:
    """(target, variant, point) of every point with a score, by sparsity (dense first), then variant."""
    return sorted(((t, lab, p) for lab, by in points(runs).items() for t, p in by.items()
                   if any(scores(r) for r in p.runs)), key=lambda x: (x[0], x[1]))


def table(runs) -> tuple[list[str], list[list[str]]] | None:
    """The report's table (variant, target %, perplexity, one column per task metric with its
    direction), or None when no run has task scores."""
    names = metric_names(runs)
    rows = _rows(runs)
    if not names or not rows:
        return None
    known = higher_is_better(runs)
    head = ["variant", "target %", "perplexity", *(f"{m} {'↑' if higher(m, known) else '↓'}" for m in names)]
    return head, [[lab, f"{100 * t:g}", p.text(), *(_cell(_values(p, m)) for m in names)] for t, lab, p in rows]


def finding(runs) -> dict | None:
    """The slide's title, computed from the scores at the highest sparsity that has any; None when
    no run has task scores."""
    rows = _rows(runs)
    names = metric_names(runs)
    if not rows or not names:
        return None
    known = higher_is_better(runs)
    top = max(t for t, _, _ in rows)
    at = {lab: p for t, lab, p in rows if t == top}
    dense = {m: statistics.fmean(v) for t, _, p in rows if t == 0 for m in names if (v := _values(p, m))}
    best = {}
    for m in names:
        have = {lab: statistics.fmean(v) for lab, p in at.items() if (v := _values(p, m))}
        if have:
            lab = (max if higher(m, known) else min)(have, key=have.get)
            best[m] = (lab, have[lab])
    where = f"At {100 * top:g}% sparsity" if top > 0 else "Dense"
    if len(best) == 1:
        (m, (lab, v)), = best.items()
        verb = "scores best on" if len(at) > 1 else "scores"
        ref = f" (dense {dense[m]:.4f})" if top > 0 and m in dense else ""
        title = f"{where} {lab} {verb} {m}: {v:.4f}{ref}"
    else:
        lab, wins = Counter(lab for lab, _ in best.values()).most_common(1)[0]
        title = (f"{where} {lab} is best on {wins} of {len(best)} lm-eval metrics" if len(at) > 1
                 else f"{where}: {lab} on {len(best)} lm-eval metrics")
    return {"title": title, "top": top, "best": best}
