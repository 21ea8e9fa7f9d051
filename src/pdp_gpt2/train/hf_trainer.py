"""The CLI run's own callbacks, around the public :class:`~pdp_gpt2.pdp.callback.PruningCallback`.

Pruning itself (attach, schedule, tau, thresholds after each optimizer step, the per-step
values in each log record, pdp_state.json in checkpoints, the completion marker of every
checkpoint, dense runs included) is the public callback, the same one users put in their own
Trainer: one code path.  What only a `pdp-gpt2 train` run does is here:

* :class:`RunMetrics`: one metrics.jsonl line per log step (and the W&B tracker), reading the
  pruning values PruningCallback put into the log record, so it must come after it;
* :class:`BarProgress`: Trainer's progress bar with loss and sparsity in it;
* :class:`MaskHistCallback`: soft-mask histograms at a few moments (``mask_hist.json``).

No copied Trainer code (the wanda ``sparse_trainer.py`` anti-pattern): only callbacks.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from pdp_gpt2.atomic import atomic_write_json

# metrics.jsonl names of the values PruningCallback logs (the file's format predates the callback).
_PRUNING_KEYS = {"sparsity": "sparsity_target", "sparsity_hard": "sparsity_hard", "band": "band",
                 "mask_mean": "mask_mean", "tau": "tau"}


class RunMetrics(TrainerCallback):
    """metrics.jsonl (``rundir.MetricsLog``) and the tracker: one record per training log step."""

    def __init__(self, metrics=None, tracker=None, is_main: bool = True):
        self.metrics, self.tracker, self.is_main = metrics, tracker, is_main

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not self.is_main:
            return  # the end-of-training summary line is not a step
        record = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                  "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        record.update({name: logs[key] for key, name in _PRUNING_KEYS.items() if key in logs})
        if self.metrics is not None:
            self.metrics.write(record)
        if self.tracker is not None:
            self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None},
                             step=state.global_step)


class BarProgress(ProgressCallback):
    """Trainer's progress bar with the last logged loss and the current target sparsity in
    the bar itself, instead of a printed dict per log step interleaved with the bar
    (every logged value is in metrics.jsonl)."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs):
            return  # the end-of-training summary line is reported by run_summary instead
        postfix = {"loss": f"{float(logs['loss']):.3f}"}
        if "sparsity" in logs:
            postfix["sparsity"] = f"{logs['sparsity']:.3f}"
        self.training_bar.set_postfix(postfix, refresh=False)


# ---- soft-mask histograms (mask_hist.json) -------------------------------------------------
# A PDP mask that works ends bimodal: almost every value at 0 or 1, a thin band near the
# threshold.  One histogram of all target masks at a handful of steps shows whether (and
# when) that happens; it costs one pass over the masks at each moment, so it is on for
# every run.  It needs no pruner: it reads the masks from the parametrizations on the model
# (PDPMask and the baselines' HardMask both have soft_mask(w)), and it must come after
# PruningCallback in the callback list, so each moment sees the thresholds of that step.

MASK_HIST = "mask_hist.json"
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
        path = Path(args.output_dir) / MASK_HIST
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
        atomic_write_json(Path(args.output_dir) / MASK_HIST, {"bins": BINS, "moments": self.records})
