"""The CLI run's own callbacks, around the public :class:`~pdp_gpt2.pdp.callback.PruningCallback`.

Pruning itself is the public callback, the one users put in their own Trainer: one code path.
What only a ``pdp-gpt2 train`` run does is here: :class:`RunMetrics` (metrics.jsonl and the
tracker, after PruningCallback, whose values it reads), :class:`BarProgress`,
:class:`MaskHistCallback` (``mask_hist.json``), :class:`TrainClock` (training time across resumes),
:class:`RecordCheckpointFiles` (file sizes and modes), :class:`SaveTrained` (the last step saved
before the evaluations) and :func:`resume_without_training`. No copied Trainer code: callbacks, one
``training_step`` that calls Trainer's own, distillation's ``compute_loss`` around Trainer's own,
and Trainer's loop events replayed where no loop runs.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from pdp_gpt2.atomic import atomic_write_json, normalize_modes
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.mask import Mask
from pdp_gpt2.pdp.kernels.mask import BAND
from pdp_gpt2.train.checkpoint import PDP_STATE, step_of, with_file_sizes
from pdp_gpt2.train.distill import DistillMixin
from pdp_gpt2.train.loss_window import LossWindow
from pdp_gpt2.train.metrics_log import read_saved, save_checkpoint_copy

# metrics.jsonl names of the values PruningCallback logs (the file's format predates the callback).
_PRUNING_KEYS = {"sparsity": "sparsity_target", "sparsity_hard": "sparsity_hard", "band": "band",
                 "mask_mean": "mask_mean", "tau": "tau"}


class RunTrainer(DistillMixin, Trainer):
    """Trainer whose ``training_step`` (Trainer's own, through super()) also hands its loss to
    ``loss_window``, so the logged loss can continue across a resume (loss_window.py); with
    ``--distill`` its ``compute_loss`` adds the teacher's KL term (distill.DistillMixin)."""

    loss_window: LossWindow | None = None

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        if self.loss_window is not None:
            self.loss_window.add(loss)
        return loss


class RunMetrics(TrainerCallback):
    """metrics.jsonl (``metrics_log.MetricsLog``) and the tracker: one record per training log step.

    The record's loss is ``window``'s (the steps since the previous line, the same value as
    Trainer's, also across a resume); each checkpoint gets the lines so far and the open window
    (``metrics_state.json``) from ``saver``, a callback that must come before PruningCallback,
    whose pdp_state.json marks the checkpoint complete: a kill right after that mark must not
    leave a checkpoint without them.  ``resume_from``: the checkpoint the run resumes from, if any."""

    def __init__(self, metrics=None, tracker=None, is_main: bool = True, resume_from: Path | None = None,
                 clock: TrainClock | None = None):
        self.metrics, self.tracker, self.is_main, self.clock = metrics, tracker, is_main, clock
        self.step_seconds: list[float] = []  # wall time of each optimizer step since the last line
        self._last: float | None = None
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.window = LossWindow()
        self.saver = _SaveMetrics(self)

    def on_train_begin(self, args, state, control, **kwargs):
        saved = None
        if state.global_step > 0:
            saved = read_saved(self.resume_from or Path(args.output_dir) / f"checkpoint-{state.global_step}")
        self.window.start(state.global_step, args.device, saved and saved["loss"])
        self.step_seconds, self._last = [], time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        # from the previous step's end to this one's: data, forward, backward, optimizer, the masks' refresh
        now = time.perf_counter()
        self.step_seconds.append(round(now - self._last, 4))
        self._last = now

    def save(self, args, state) -> None:
        loss = self.window.state()  # every rank: its sum is gathered
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and self.metrics is not None and ckpt.is_dir():
            save_checkpoint_copy(ckpt, self.metrics.records, loss)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        if "loss" not in logs:
            return  # the end-of-training summary line is not a step
        if (loss := self.window.take(state.global_step)) is not None:  # every rank (a gather)
            logs["loss"] = loss  # the progress bar and later callbacks show it too
        if not self.is_main:
            return
        record = {"step": state.global_step, "epoch": round(float(state.epoch or 0), 4),
                  "loss": logs.get("loss"), "lr": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm")}
        record.update({name: logs[key] for key, name in _PRUNING_KEYS.items() if key in logs})
        # where the run's time goes (benchmarks/run_cost.py reads it), kept across resumes like every line
        record["step_seconds"], self.step_seconds = self.step_seconds, []
        if self.clock is not None and (total := self.clock.seconds()) is not None:
            record["train_seconds"] = round(total, 3)
        if self.metrics is not None:
            self.metrics.write(record)
        if self.tracker is not None:
            self.tracker.log({f"train/{k}": v for k, v in record.items() if k != "step" and v is not None},
                             step=state.global_step)


class _SaveMetrics(TrainerCallback):
    """RunMetrics' part of a checkpoint, written before the checkpoint is marked complete."""

    def __init__(self, owner: RunMetrics):
        self.owner = owner

    def on_save(self, args, state, control, **kwargs):
        self.owner.save(args, state)


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
# (every Mask has soft_mask(w), pdp/core/mask.py), and it must come after
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
        if plist is None or not isinstance(plist[0], Mask):
            continue
        parts.append(plist[0].soft_mask(plist.original).detach().float().reshape(-1).cpu())
    return torch.cat(parts) if parts else None


def histogram(values: torch.Tensor, bins: int = BINS) -> dict:
    """Counts of mask values in ``bins`` equal bins over [0, 1], plus two summary fractions."""
    counts = torch.histc(values.clamp(0, 1), bins=bins, min=0.0, max=1.0)
    n, (lo, hi) = values.numel(), BAND  # the band the driver's stats() count too
    return {"counts": [int(c) for c in counts], "edges": [i / bins for i in range(bins + 1)], "n": n,
            "below_half": float((values < 0.5).sum()) / n,
            "band": float(((values > lo) & (values < hi)).sum()) / n}


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


# ---- checkpoints ---------------------------------------------------------------------------

class TrainClock(TrainerCallback):
    """Training time across resumes: what the checkpoint resumed from recorded (``before``; None when
    it recorded none, so the total is unknown) plus this process's time since training began."""

    def __init__(self, before: float | None = 0.0):
        known = isinstance(before, (int, float)) and not isinstance(before, bool) and 0 <= before < math.inf
        self.before = float(before) if known else None
        self.start: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.perf_counter()

    def seconds(self) -> float | None:
        if self.before is None:
            return None
        return self.before + (time.perf_counter() - self.start if self.start is not None else 0.0)


class RecordCheckpointFiles(TrainerCallback):
    """Adds :func:`with_file_sizes` (and, with a ``clock``, the training time so far) to each
    checkpoint's pdp_state.json, after PruningCallback wrote it (the core writes the file but cannot
    know our run directory); atomic, still last.  A kill between the two writes leaves a complete
    checkpoint checked without sizes.  The checkpoint's files get the mode of a normally created file
    first (safetensors writes 0600, as final/ would be without atomic_dir)."""

    def __init__(self, clock: TrainClock | None = None):
        self.clock = clock

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and (ckpt / PDP_STATE).is_file():
            normalize_modes(ckpt)
            saved = with_file_sizes(ckpt, json.loads((ckpt / PDP_STATE).read_text()))
            if self.clock is not None:
                saved["train_seconds"] = self.clock.seconds()
            atomic_write_json(ckpt / PDP_STATE, saved)


class SaveTrained(TrainerCallback):
    """Makes the last step a checkpoint step (unless ``guard`` stopped the run for a NaN loss): the trained
    state is on disk before the evaluations after training start, so a failure or a signal there loses
    nothing and ``--resume`` only evaluates (:func:`resume_without_training`).  Must come after the guard."""

    def __init__(self, guard):
        self.guard = guard

    def on_step_end(self, args, state, control, **kwargs):
        if self.guard.diverged is None and 0 < state.max_steps <= state.global_step:
            control.should_save = True
        return control


def resume_without_training(trainer, checkpoint: Path | None, total_steps: int) -> bool:
    """A checkpoint at or past the planned total: load its weights and state, train no step.

    Trainer would run one more step (and save checkpoint-<N+1>); a kill during the final
    evaluation leaves exactly this state, and its rerun must end as the uninterrupted run did.
    """
    step = step_of(checkpoint)
    if step is None or step < total_steps:
        return False
    from safetensors.torch import load_file
    from transformers import TrainerState

    model = trainer.model
    weights = load_file(str(Path(checkpoint) / "model.safetensors"))
    result = model.load_state_dict(weights, strict=False)
    loaded = {model.state_dict()[k].data_ptr() for k in weights}
    missing = [k for k in result.missing_keys if model.state_dict()[k].data_ptr() not in loaded]  # tied: fine
    if missing or result.unexpected_keys:
        raise UsageError(f"--resume {checkpoint}: its model.safetensors does not fit the model "
                         f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)")
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    trainer.state.is_local_process_zero = trainer.is_local_process_zero()
    trainer.state.is_world_process_zero = trainer.is_world_process_zero()
    # The events Trainer.train sends around its loop, so callbacks see the resumed state as on
    # any resume (the pruning callback restores the checkpoint step's schedule and tau, the guard
    # installs and removes its hooks); progress bars are left out, there is no step to show.
    callbacks = [cb for cb in trainer.callback_handler.callbacks if not isinstance(cb, ProgressCallback)]
    for event in ("on_train_begin", "on_train_end"):
        for cb in callbacks:
            getattr(cb, event)(trainer.args, trainer.state, trainer.control, model=trainer.model)
    print(f"pdp-gpt2: {checkpoint} is at step {step} of {total_steps}: no training left, "
          "evaluating and writing the result", file=sys.stderr, flush=True)
    return True
