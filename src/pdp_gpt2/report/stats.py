"""Runs -> points of a plot: one value per (variant, target sparsity), with its seed spread.

Several runs can land on one point.  Runs that differ only in ``seed`` are repeats: the
point is their mean, with the sample standard deviation and every seed's value kept for
the spread.  Runs with the same seed that still share a point (a sweep that also varied,
say, the learning rate) are alternatives: the best of them stands for that seed.
"""
from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Point:
    label: str
    target: float
    values: list[float] = field(default_factory=list)  # one per seed, in seed order
    seeds: list = field(default_factory=list)
    runs: list = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        """Sample standard deviation over seeds; 0 for a single seed."""
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def actual(self) -> float:
        return statistics.fmean(r.actual for r in self.runs)

    def text(self, fmt: str = "{:.2f}") -> str:
        """'132.48' or '132.48 ± 0.31 (3 seeds)'."""
        if self.n == 1:
            return fmt.format(self.mean)
        return f"{fmt.format(self.mean)} ± {fmt.format(self.sd)} ({self.n} seeds)"


def points(runs, key=lambda r: r.label, value=lambda r: r.ppl) -> dict[str, dict[float, Point]]:
    """key -> target -> Point, over runs whose value is a finite number."""
    best: dict = {}
    for r in runs:
        v = value(r)
        if v is None or not math.isfinite(v):
            continue
        k = (key(r), r.target, r.seed)
        if k not in best or v < value(best[k]):
            best[k] = r
    out: dict[str, dict[float, Point]] = defaultdict(dict)
    for (label, target, seed), r in sorted(best.items(), key=lambda kv: (kv[0][0], kv[0][1], str(kv[0][2]))):
        p = out[label].setdefault(target, Point(label, target))
        p.values.append(value(r))
        p.seeds.append(seed)
        p.runs.append(r)
    return dict(out)


def dense_mean(runs) -> float | None:
    """The dense fine-tuned reference: the mean over its seeds (the best run per seed) of the runs without
    masks (the registry's method that does not prune), plain fine-tuning only (not distilled)."""
    pts = points([r for r in runs if not r.prunes and not r.distilled], key=lambda r: "reference")
    by = pts.get("reference")
    return statistics.fmean(p.mean for p in by.values()) if by else None


def any_repeats(pts: dict[str, dict[float, Point]]) -> bool:
    return any(p.n > 1 for by in pts.values() for p in by.values())


def rel(a: float, b: float) -> float:
    """a relative to b in percent: +4.1 means a is 4.1% above b."""
    return 100.0 * (a / b - 1.0)
