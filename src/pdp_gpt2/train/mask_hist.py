"""Soft-mask histograms at a few moments of training, for the report (``mask_hist.json``).

A PDP mask that works ends bimodal: almost every value at 0 or 1, a thin band
near the threshold.  One histogram of all target masks at a handful of steps
shows whether (and when) that happens; it costs one pass over the masks at
each moment, so it is on for every run.

The callback needs no pruner: it reads the masks from the parametrizations on
the model (``PDPMask`` and the baselines' ``HardMask`` both have ``soft_mask(w)``).
It must come after ``PDPCallback`` in the callback list, so each moment sees
the thresholds of that step.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback

from pdp_gpt2.atomic import atomic_write_json

FILENAME = "mask_hist.json"
BINS = 50
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)  # moments, as fractions of the run's optimizer steps


def moments(total_steps: int, fractions=FRACTIONS) -> list[int]:
    """Distinct steps at which to record: round(f * total) for each fraction."""
    return sorted({min(total_steps, max(0, round(f * total_steps))) for f in fractions})


@torch.no_grad()
def mask_values(model: torch.nn.Module) -> torch.Tensor | None:
    """All soft-mask values of the parametrized weights, flattened (None if nothing is masked)."""
    parts = []
    for module in model.modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        if plist is None or not hasattr(plist[0], "soft_mask"):
            continue
        parts.append(plist[0].soft_mask(plist.original).detach().float().reshape(-1).cpu())
    return torch.cat(parts) if parts else None


def histogram(values: torch.Tensor, bins: int = BINS) -> dict:
    """Counts of mask values in ``bins`` equal bins over [0, 1], plus two summary fractions."""
    counts = torch.histc(values.clamp(0, 1), bins=bins, min=0.0, max=1.0)
    n = values.numel()
    return {"counts": [int(c) for c in counts], "edges": [i / bins for i in range(bins + 1)], "n": n,
            "below_half": float((values < 0.5).sum()) / n,
            "band": float(((values > 0.05) & (values < 0.95)).sum()) / n}


class MaskHistCallback(TrainerCallback):
    """Write mask histograms at :func:`moments` of training to ``<output_dir>/mask_hist.json``."""

    def __init__(self, fractions=FRACTIONS):
        self.fractions = fractions
        self.records: list[dict] = []
        self.when: set[int] = set()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.when = set(moments(state.max_steps, self.fractions))
        path = Path(args.output_dir) / FILENAME
        if state.global_step > 0 and path.exists():  # resumed: keep what was recorded up to here
            old = json.loads(path.read_text()).get("moments", [])
            self.records = [r for r in old if r["step"] <= state.global_step]
        self._record(args, state, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self._record(args, state, model)

    def _record(self, args, state, model) -> None:
        step = state.global_step
        if step not in self.when or model is None or not state.is_world_process_zero:
            return
        if any(r["step"] == step for r in self.records):
            return
        values = mask_values(model)
        if values is None:
            return  # dense fine-tuning: no masks
        self.records.append({"step": step, "max_steps": state.max_steps, **histogram(values)})
        atomic_write_json(Path(args.output_dir) / FILENAME, {"bins": BINS, "moments": self.records})
