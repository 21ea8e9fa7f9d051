"""PruningCallback: PDP (or a baseline) inside anyone's Hugging Face ``Trainer``, in one line.

    trainer = Trainer(model=model, args=args, train_dataset=train,
                      callbacks=[pdp_gpt2.PruningCallback(pdp_gpt2.PDPConfig(sparsity=0.9))])

It attaches the masks in ``on_init_end`` (before DDP wraps the model and before a checkpoint with
masked keys loads), moves sparsity and tau after every optimizer step, adds the pruning values to
each log record, writes ``pdp_state.json`` into each checkpoint and finalizes at train end, so
``trainer.save_model()`` writes a plain model with exact zeros. Each event's job, and why the
state is a file rather than Trainer's ``ExportableState``: docs/api.md. Every rank computes the
same masks from the same weights, so DDP needs nothing more; sharded training inside Trainer
(FSDP, ZeRO-3) is not supported, FSDP2 in your own loop is (docs/distributed.md).
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.names import STATE_FILE
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.attach import attach
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.core.config import PruningConfig
from pdp_gpt2.pdp.core.schedule import SCHEDULES, PruningSchedule
from pdp_gpt2.pdp.kernels.sharded import barrier


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DDP / DataParallel wrappers (``.module``)."""
    while isinstance(getattr(model, "module", None), nn.Module):
        model = model.module
    return model


def write_checkpoint_state(args, state, payload: dict) -> None:
    """Write ``payload`` as ``<output_dir>/checkpoint-<step>/pdp_state.json``: after every rank has
    written its part of the checkpoint, atomically, by the process that saves.  Being last, the
    file marks a complete checkpoint (a run killed mid-save leaves a directory without it)."""
    barrier()
    ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
    if not (args.should_save and ckpt.is_dir()):
        return
    atomic_write_json(ckpt / STATE_FILE, payload)


def read_checkpoint_state(checkpoint: Path) -> dict | None:
    """A checkpoint's pdp_state.json ({} for a run without masks), or None if absent."""
    p = Path(checkpoint) / STATE_FILE
    return json.loads(p.read_text()) if p.is_file() else None


class PruningCallback(TrainerCallback):
    """Prune while a ``Trainer`` trains: attach, schedule, log, checkpoint, finalize (module docstring).

    ``config``: the :class:`PDPConfig` (target sparsity, tau and its schedule, pattern, ...).
    ``method``: a name in the method registry (pdp/core/registry.py): ``pdp``, a baseline (``gmp``,
    ``magnitude``, ``wanda`` with ``calibration`` token blocks), or ``dense`` (no masks; checkpoints
    still get their pdp_state.json).  ``ramp_steps`` (default ``ramp_fraction`` of the run's optimizer steps;
    more than the run has is a ValueError when training begins, before the first step) and
    ``schedule`` (``cubic`` or ``linear``) shape the sparsity ramp; tau anneals after it.
    ``finalize=False`` leaves the masks on at the end (call :meth:`finalize` yourself).
    ``log_layers``: also log each target's hard sparsity and band.
    ``resume_from``: the checkpoint directory given to ``trainer.train(resume_from_checkpoint=...)``
    when it is not ``<output_dir>/checkpoint-<step>`` (callbacks are not told which one Trainer loads).
    """

    def __init__(self, config: PDPConfig | None = None, *, method: str = "pdp", ramp_steps: int | None = None,
                 ramp_fraction: float = 0.5, schedule: str = "cubic", finalize: bool = True,
                 log_layers: bool = True, calibration: torch.Tensor | None = None, kernels=None,
                 resume_from: str | Path | None = None):
        if config is not None and not isinstance(config, PruningConfig):
            raise TypeError(f"config must be a PDPConfig (or a method's own config), got {type(config).__name__}")
        if method not in registry.names():
            raise ValueError(f"unknown method {method!r}; choose from {', '.join(registry.names())}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {sorted(SCHEDULES)}")
        if ramp_steps is None and not 0.0 <= ramp_fraction <= 1.0:
            raise ValueError(f"ramp_fraction must be in [0, 1], got {ramp_fraction}")
        if ramp_steps is not None and ramp_steps < 0:  # one longer than the run is refused at on_train_begin
            raise ValueError(f"ramp_steps must be >= 0, got {ramp_steps}")
        self.config = config or PDPConfig()
        self.method, self.ramp_steps, self.ramp_fraction, self.kind = method, ramp_steps, ramp_fraction, schedule
        self.finalize_at_end, self.log_layers, self.calibration = finalize, log_layers, calibration
        self.kernels = kernels  # fused.KernelOptions for PDP's kernels (None: defaults)
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.attached = False
        self.pruner = None
        self.schedule: PruningSchedule | None = None
        self.model: nn.Module | None = None
        self.finalized = False
        self.first = False  # installed ahead of Trainer's own callbacks (install())
        self._warned = False

    # ---- attaching -------------------------------------------------------------------------
    def attach(self, model: nn.Module):
        """Attach the masks to ``model`` now (idempotent); returns the pruner.  Trainer does this
        through ``on_init_end``; call it yourself when something needs the pruner before Trainer
        exists (e.g. ``MaskAwareAdamW``)."""
        model = unwrap(model)
        if self.attached:
            if model is not self.model:
                raise ValueError("this PruningCallback is already attached to another model; use one per model")
            return self.pruner
        self.pruner = attach(model, self.method, self.config, calibration=self.calibration, kernels=self.kernels)
        self.model, self.attached = model, True
        return self.pruner

    def install(self, trainer) -> "PruningCallback":
        """Attach to ``trainer.model`` and become the trainer's first callback, so the pruning
        metrics are in each log record before ``report_to`` integrations (wandb, tensorboard) read it."""
        self.attach(trainer.model)
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        self.first = True
        return self

    # ---- Trainer events --------------------------------------------------------------------
    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self.attach(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if self.finalized:
            raise RuntimeError("this PruningCallback already finalized its model; a new run needs a new callback")
        if not self.attached:
            if state.global_step > 0:
                raise RuntimeError("PruningCallback must be attached before the checkpoint loads: pass it in "
                                   "Trainer(callbacks=[...]) or call .install(trainer) before trainer.train()")
            self.attach(model)
        if self.pruner is None:
            return  # dense: nothing to schedule
        self.schedule = PruningSchedule(self.pruner, max(1, state.max_steps), ramp_steps=self.ramp_steps,
                                        ramp_fraction=self.ramp_fraction, schedule=self.kind,
                                        start_step=state.global_step)
        if state.global_step > 0:
            saved = read_checkpoint_state(self.resume_from or Path(args.output_dir) / f"checkpoint-{state.global_step}")
            if saved and int(saved.get("steps", -1)) == state.global_step:
                self.schedule.load_state_dict(saved)  # the run's plan, budgets exactly as it computed them

    def on_step_end(self, args, state, control, **kwargs):
        if self.schedule is not None and not self.finalized:
            self.schedule.apply(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs or self.schedule is None or self.finalized:
            return  # eval records and the end-of-training summary are not steps
        if not state.is_world_process_zero:
            return
        values = self.schedule.metrics(layers=self.log_layers)
        logs.update(values)
        last = state.log_history[-1] if state.log_history else None
        if last is not None and last.get("step") == state.global_step and "loss" in last:
            last.update(values)  # Trainer appended this record just before calling on_log
        if not self.first and not self._warned and _reports(args):
            self._warned = True
            warnings.warn("PruningCallback runs after Trainer's report_to integrations, which therefore log no "
                          "pruning metrics; use PruningCallback(cfg).install(trainer) instead of callbacks=[...]",
                          stacklevel=2)

    def on_save(self, args, state, control, **kwargs):
        if not self.finalized:
            write_checkpoint_state(args, state, self.schedule.state_dict() if self.schedule is not None else {})

    def on_train_end(self, args, state, control, **kwargs):
        if self.finalize_at_end and self.pruner is not None and not self.finalized:
            self.finalize()

    # ---- the hand-off ----------------------------------------------------------------------
    def finalize(self) -> nn.Module:
        """Bake the masks at the target sparsity (also when training stopped before the end of the
        ramp): exact zeros, plain modules, state_dict keys of a fresh model.  Returns the model."""
        if self.pruner is not None:
            self.pruner.set_sparsity(self.config.sparsity)
            self.pruner.finalize()
        self.finalized = True
        return self.model


def _reports(args) -> bool:
    to = getattr(args, "report_to", None) or []
    to = [to] if isinstance(to, str) else list(to)
    return any(t not in ("none", None) for t in to)
