"""Sparsity schedules: pure functions of the optimizer step.

``linear`` is what the original tool did; ``cubic`` is Zhu & Gupta (2017),
"To prune, or not to prune": s_t = s_f (1 - (1 - p)^3), which prunes fast while
the network has many redundant weights and slowly as it nears the target.
"""
from __future__ import annotations


def _progress(step: int, start: int, ramp: int) -> float:
    if ramp <= 0:
        return 1.0 if step >= start else 0.0
    return min(1.0, max(0.0, (step - start) / ramp))


def linear(step: int, final: float, ramp: int, start: int = 0) -> float:
    return final * _progress(step, start, ramp)


def cubic(step: int, final: float, ramp: int, start: int = 0) -> float:
    return final * (1.0 - (1.0 - _progress(step, start, ramp)) ** 3)


SCHEDULES = {"linear": linear, "cubic": cubic}


def sparsity_at(kind: str, step: int, final: float, ramp: int, start: int = 0) -> float:
    """Target sparsity after ``step`` optimizer steps: 0 at ``start``, ``final`` from ``start + ramp`` on."""
    try:
        fn = SCHEDULES[kind]
    except KeyError:
        raise ValueError(f"unknown schedule {kind!r}; choose from {sorted(SCHEDULES)}") from None
    return fn(step, final, ramp, start)
