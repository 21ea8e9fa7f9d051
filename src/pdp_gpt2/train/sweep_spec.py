"""A W&B sweep file, read and checked the way W&B's controller checks it, and the trials it plans:
``grid`` enumerates combinations lazily (``--count`` keeps the first N; a grid over MAX_TRIALS
needs it), ``random`` draws ``--count`` trials with a seeded RNG, and ``bayes`` (which needs a
server) falls back to ``random`` with a note. Every mistake in the file is one UsageError line.
"""
from __future__ import annotations

import itertools
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train import flags

SEARCH_METHODS = ("grid", "random", "bayes")
# W&B's distributions that this runner samples (the same names and arguments as W&B).
DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "uniform", "q_uniform", "log_uniform_values",
                 "q_log_uniform_values", "log_uniform", "normal", "q_normal", "log_normal")


@dataclass
class SweepSpec:
    method: str
    metric: str
    goal: str
    parameters: dict[str, dict]
    program: str = "main.py"


def train_flags() -> set[str]:
    """Every flag name `pdp-gpt2 train` accepts."""
    return {f.name for f in flags.fields()}


def parse_spec(raw: dict, source: str = "sweep config") -> SweepSpec:
    """Validate a parsed sweep file; every user mistake is one UsageError line."""
    if not isinstance(raw, dict):
        raise UsageError(f"{source}: expected a mapping at the top level")
    method = raw.get("method")
    if method not in SEARCH_METHODS:
        raise UsageError(f"{source}: method must be one of {', '.join(SEARCH_METHODS)}, got {method!r}")
    metric = raw.get("metric") or {"name": "perplexity", "goal": "minimize"}
    if not isinstance(metric, dict):
        raise UsageError(f"{source}: metric must be a mapping such as {{name: perplexity, goal: minimize}}, "
                         f"got {metric!r}")
    if not isinstance(metric.get("name", "perplexity"), str):
        raise UsageError(f"{source}: metric.name must be a string, got {metric.get('name')!r}")
    if metric.get("goal", "minimize") not in ("minimize", "maximize"):
        raise UsageError(f"{source}: metric.goal must be minimize or maximize, got {metric.get('goal')!r}")
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        raise UsageError(f"{source}: 'parameters' must be a non-empty mapping")
    unknown = sorted(set(params) - train_flags())
    if unknown:
        raise UsageError(f"{source}: unknown train flag(s) {', '.join(unknown)} (see `pdp-gpt2 train --help`)")
    for name, p in params.items():
        if not isinstance(p, dict):
            raise UsageError(f"{source}: parameter {name} must be a mapping such as {{values: [...]}}")
        if "parameters" in p:
            raise UsageError(f"{source}: nested parameters ({name}) are not supported")
        dist = distribution_of(p)
        if dist not in DISTRIBUTIONS:
            raise UsageError(f"{source}: parameter {name}: unknown distribution {dist!r}")
        problem = check_param(p, dist)
        if problem:
            raise UsageError(f"{source}: parameter {name}: {problem}")
        if method == "grid" and dist not in ("constant", "categorical"):
            raise UsageError(f"{source}: grid search needs 'values' or 'value' for {name}, got distribution {dist}")
    return SweepSpec(method, metric.get("name", "perplexity"), metric.get("goal", "minimize"), params,
                     str(raw.get("program", "main.py")))


def _num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_param(p: dict, dist: str) -> str | None:
    """What is wrong with one parameter spec for its distribution (W&B's rules), or None."""
    if dist == "constant":
        return None if "value" in p else "needs 'value'"
    if dist == "categorical":
        vals, probs = p.get("values"), p.get("probabilities")
        if not isinstance(vals, list) or not vals:
            return f"'values' must be a non-empty list, got {vals!r}"
        if probs is not None:
            if not isinstance(probs, list) or len(probs) != len(vals) or not all(_num(x) and x >= 0 for x in probs):
                return f"'probabilities' must be {len(vals)} non-negative numbers, one per value"
            if abs(sum(probs) - 1.0) > 1e-6:
                return f"'probabilities' must sum to 1, got {sum(probs):g}"
        return None
    if "q" in p and not (_num(p["q"]) and p["q"] > 0):
        return f"'q' must be a number > 0, got {p['q']!r}"
    if dist in ("normal", "q_normal", "log_normal"):
        for k in ("mu", "sigma"):
            if k in p and not _num(p[k]):
                return f"'{k}' must be a number, got {p[k]!r}"
        return None if p.get("sigma", 1.0) > 0 else f"'sigma' must be > 0, got {p['sigma']!r}"
    lo, hi = p.get("min"), p.get("max")
    if not (_num(lo) and _num(hi)):
        return f"distribution {dist} needs numbers 'min' and 'max', got min={lo!r} max={hi!r}"
    if lo > hi:
        return f"'min' ({lo}) is above 'max' ({hi})"
    if dist == "int_uniform" and not (isinstance(lo, int) and isinstance(hi, int)):
        return f"int_uniform needs integer 'min' and 'max', got {lo!r} and {hi!r}"
    if dist in ("log_uniform_values", "q_log_uniform_values") and lo <= 0:
        return f"{dist} samples between the logs of 'min' and 'max', so 'min' must be > 0, got {lo!r}"
    return None


def load_spec(path: str | Path) -> SweepSpec:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"sweep config not found: {path}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return parse_spec(raw, str(path))


def distribution_of(p: dict) -> str:
    """W&B's inference when 'distribution' is omitted: values -> categorical, value -> constant,
    min/max integers -> int_uniform, other min/max -> uniform."""
    if "distribution" in p:
        return p["distribution"]
    if "values" in p:
        return "categorical"
    if "value" in p:
        return "constant"
    if isinstance(p.get("min"), int) and isinstance(p.get("max"), int):
        return "int_uniform"
    return "uniform"


def sample(p: dict, rng: random.Random):
    """One draw of a W&B parameter spec."""
    dist = distribution_of(p)
    q = p.get("q", 1)
    if dist == "constant":
        return p["value"]
    if dist == "categorical":
        return rng.choices(p["values"], weights=p.get("probabilities"))[0]
    if dist == "int_uniform":
        return rng.randint(int(p["min"]), int(p["max"]))
    if dist in ("uniform", "q_uniform"):
        x = rng.uniform(p["min"], p["max"])
    elif dist in ("log_uniform_values", "q_log_uniform_values"):
        x = math.exp(rng.uniform(math.log(p["min"]), math.log(p["max"])))
    elif dist == "log_uniform":  # W&B: min/max are natural logs
        x = math.exp(rng.uniform(p["min"], p["max"]))
    elif dist in ("normal", "q_normal"):
        x = rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0))
    else:  # log_normal
        x = math.exp(rng.gauss(p.get("mu", 0.0), p.get("sigma", 1.0)))
    # 6 significant digits: flags and sweep.csv stay readable, and no run depends on the 7th
    return round(x / q) * q if dist.startswith("q_") else float(f"{x:.6g}")


# A grid without --count runs every combination; past this many it is a mistake (each trial trains a
# model), and expanding it alone took 7 GB for 30^8 combinations: refused before anything is made.
MAX_TRIALS = 10_000


def _grid_choices(params: dict[str, dict]) -> list[list]:
    return [p["values"] if "values" in p else [p["value"]] for p in params.values()]


def grid_size(params: dict[str, dict]) -> int:
    """How many combinations a grid has, counted without making them."""
    return math.prod(len(c) for c in _grid_choices(params))


def grid_trials(params: dict[str, dict], count: int | None = None) -> list[dict]:
    """The first ``count`` combinations (all if None), the last parameter varying fastest.
    Enumerated lazily: only the trials returned are ever made."""
    names = list(params)
    combos = itertools.islice(itertools.product(*_grid_choices(params)), count)
    return [dict(zip(names, combo)) for combo in combos]


def check_plan(spec: SweepSpec, count: int | None) -> None:
    """UsageError for a grid too large to run whole (before any trial or directory is made)."""
    if spec.method == "grid" and count is None and (n := grid_size(spec.parameters)) > MAX_TRIALS:
        raise UsageError(f"the grid has {n:,} combinations (over {MAX_TRIALS:,}); pass --count N to run "
                         "its first N, or list fewer values")


def plan_trials(spec: SweepSpec, count: int | None, seed: int = 0) -> list[dict]:
    check_plan(spec, count)
    if spec.method == "grid":
        return grid_trials(spec.parameters, count)
    if spec.method == "bayes":
        print("pdp-gpt2 sweep: note: 'bayes' needs the W&B server; sampling at random instead", file=sys.stderr)
    rng = random.Random(seed)
    return [{n: sample(p, rng) for n, p in spec.parameters.items()} for _ in range(count or 10)]


def trial_params(sampled: dict, overrides: dict | None = None) -> dict:
    """A trial's flags: the draw, then use_wandb off (the local runner logs nothing to W&B unless
    asked; an agent-style use_wandb=true would only go offline), then the user's --set overrides."""
    return {**sampled, "use_wandb": False, **(overrides or {})}


def planned(spec: SweepSpec, count: int | None = None, seed: int = 0,
            overrides: dict | None = None) -> list[tuple[str, dict]]:
    """The trials a sweep runs: (trial-NNN, its train flags)."""
    return [(f"trial-{i:03d}", trial_params(sampled, overrides))
            for i, sampled in enumerate(plan_trials(spec, count, seed))]
