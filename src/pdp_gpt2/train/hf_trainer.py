"""The bridge between HF Trainer and the pruner: one TrainerCallback, no copied Trainer code.

Trainer calls ``on_step_end`` once per *optimizer* step (not per micro-batch), right
after ``optimizer.step()``, so that is where the schedule moves the sparsity and the
thresholds are refreshed from the updated weights.  Under gradient accumulation the
thresholds therefore stay fixed across the micro-batches of one step.
"""
from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from pdp_gpt2.train.distributed import barrier
from pdp_gpt2.train.rundir import PDP_STATE, atomic_write_json
from pdp_gpt2.pdp.schedule import sparsity_at


class PDPCallback(TrainerCallback):
    def __init__(self, pruner, *, final_sparsity: float, ramp_steps: int, schedule: str,
                 metrics=None, tracker=None, is_main: bool = True):
        self.pruner, self.final, self.ramp, self.schedule = pruner, final_sparsity, ramp_steps, schedule
        self.metrics, self.tracker, self.is_main = metrics, tracker, is_main

    def target_at(self, step: int) -> float:
        return sparsity_at(self.schedule, step, self.final, self.ramp)

    def _apply(self, step: int) -> None:
        if self.pruner is not None:
            self.pruner.steps = step
            self.pruner.set_sparsity(self.target_at(step))  # refreshes every threshold

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume, global_step is already the checkpoint's step: continue the ramp from there.
        self._apply(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._apply(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs or not self.is_main:
            return  # the end-of-training summary line is not a step
        record = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                  "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        if self.pruner is not None:
            st = self.pruner.stats()
            record.update(sparsity_target=st["sparsity_target"], sparsity_hard=st["sparsity_hard"],
                          band=st["band"], mask_mean=st["mask_mean"])
        if self.metrics is not None:
            self.metrics.write(record)
        if self.tracker is not None:
            self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None},
                             step=state.global_step)

    def on_save(self, args, state, control, **kwargs):
        # pdp_state.json is the checkpoint's completion marker (outputs.is_complete), so it is
        # written last, atomically, and only once every rank has written its rng_state_<rank>.pth.
        barrier()
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if self.is_main and ckpt.is_dir():
            atomic_write_json(ckpt / PDP_STATE, self.pruner.state_dict() if self.pruner is not None else {})


class BarProgress(ProgressCallback):
    """Trainer's progress bar with the last logged loss and the current target sparsity in
    the bar itself, instead of a printed dict per log step interleaved with the bar
    (every logged value is in metrics.jsonl)."""

    def __init__(self, pruner=None):
        super().__init__()
        self.pruner = pruner

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not (state.is_world_process_zero and self.training_bar is not None and logs and "loss" in logs):
            return  # the end-of-training summary line is reported by run_summary instead
        postfix = {"loss": f"{float(logs['loss']):.3f}"}
        if self.pruner is not None:
            postfix["sparsity"] = f"{self.pruner.sparsity:.3f}"
        self.training_bar.set_postfix(postfix, refresh=False)


def load_pdp_state(checkpoint: Path) -> dict | None:
    """The pruner state of a checkpoint ({} for dense fine-tuning, None if absent)."""
    p = Path(checkpoint) / PDP_STATE
    return json.loads(p.read_text()) if p.exists() else None
