"""Stopping a run on purpose, at a step boundary, so what is on disk stays resumable.

SIGINT / SIGTERM finish the current optimizer step, save ``checkpoint-<step>`` and exit
128+signal; a second Ctrl-C aborts at once (``aborted``: one line, exit 130, the checkpoint it
cut short removed). A NaN/inf loss or non-finite gradients drop that step's gradients and stop
*without* saving, so the newest checkpoint is the last good one (exit 3). The stop is decided in
``on_step_end``, after the optimizer step and before Trainer logs or saves, and after
DefaultFlowCallback, so these flags override its "save now". The same hook makes the last step a
log step; a checkpoint step is not made one (the open loss window travels in the checkpoint).
After training, :func:`evaluating` makes a signal during the evaluations one line too (the trained
state is saved first).
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from pathlib import Path

import torch
from transformers import TrainerCallback

from pdp_gpt2.train import distributed

from pdp_gpt2.train import checkpoint


class RunStopped(RuntimeError):
    """A run that ended early on purpose; the CLI prints the message and exits with ``exit_status``."""

    exit_status = 1


class DivergedError(RunStopped):
    exit_status = 3


class Interrupted(RunStopped):
    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


# What went wrong, as numbers so that max() over ranks picks the most telling one.
_NAN_LOSS, _INF_LOSS, _BAD_GRADS = 3.0, 2.0, 1.0
_WHAT = {_NAN_LOSS: "the loss is nan", _INF_LOSS: "the loss is inf", _BAD_GRADS: "the gradients are not finite"}


def _grads_finite(model) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return True
    norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6: one fused pass
    total = norm(grads) if norm else torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]).norm()
    return bool(torch.isfinite(total))


class _SignalWhileEvaluating(BaseException):
    """Raised by :func:`evaluating`'s handler; a BaseException, so no ``except Exception`` on its way
    turns a Ctrl-C into a traceback of something else."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def evaluating(saved: Path):
    """The evaluations after training: SIGINT / SIGTERM stop them at once and become one
    :class:`Interrupted` line (exit 130 / 143) that points at ``saved``, the checkpoint of the trained
    state, from which ``--resume`` evaluates and finishes.  The previous handlers come back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _SignalWhileEvaluating(signum)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    except _SignalWhileEvaluating as e:
        raise Interrupted(f"stopped by {signal.Signals(e.signum).name} while evaluating the trained model; it is "
                          f"saved in {saved}; --resume evaluates it and finishes the run", e.signum) from None
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


class RunGuard(TrainerCallback):
    def __init__(self):
        self.signum = 0
        self._loss_kind: torch.Tensor | None = None  # worst loss of this step (_NAN_LOSS, ...), on device
        self._bad = 0.0
        self._hook = None
        self._old_handlers: dict = {}
        self.diverged: tuple[int, str] | None = None  # (step, what went wrong)
        self.interrupted: tuple[int, int] | None = None  # (step, signum)

    # ---- watching -------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._hook = model.register_forward_hook(self._watch_loss)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    def _watch_loss(self, module, inputs, output) -> None:
        loss = getattr(output, "loss", None)
        if loss is None or not module.training:
            return
        loss = loss.detach()
        kind = torch.where(torch.isnan(loss), _NAN_LOSS, torch.where(torch.isinf(loss), _INF_LOSS, 0.0)).max()
        self._loss_kind = kind if self._loss_kind is None else torch.maximum(self._loss_kind, kind)  # no sync here

    def _on_signal(self, signum, frame) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: the user does not want to wait for the save
        self.signum = signum
        if distributed.is_main():
            print(f"pdp-gpt2: {signal.Signals(signum).name} received; saving a checkpoint after this step, "
                  "then stopping (Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    # ---- deciding -------------------------------------------------------------------
    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        bad = float(self._loss_kind) if self._loss_kind is not None else 0.0  # one sync per optimizer step
        self._loss_kind = None
        # fp16 overflows are routine (the grad scaler skips those steps), so only the loss counts there.
        if not bad and not args.fp16 and model is not None and not _grads_finite(model):
            bad = _BAD_GRADS
        if bad:
            self._bad = bad
            for p in model.parameters():  # the optimizer skips params without a gradient: weights stay finite
                p.grad = None

    def on_step_end(self, args, state, control, **kwargs):
        bad, signum = distributed.max_over_ranks(self._bad, float(self.signum))
        if bad > 0:
            self.diverged = (state.global_step, _WHAT[bad])
            control.should_save = control.should_log = control.should_evaluate = False
            control.should_training_stop = True
        elif signum > 0:
            self.interrupted = (state.global_step, int(signum))
            control.should_save = control.should_training_stop = True
        if bad == 0 and 0 < state.max_steps <= state.global_step:
            control.should_log = True  # the last steps' loss, when the run does not end on a multiple of the interval
        return control

    def on_epoch_end(self, args, state, control, **kwargs):
        if self.diverged:  # Trainer runs one more log/save round after the loop: keep it from saving
            control.should_save = control.should_log = False
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.close()

    def close(self) -> None:
        """Remove the loss hook and put the previous signal handlers back (also after an abort)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        self._old_handlers = {}

    # ---- reporting ------------------------------------------------------------------
    def aborted(self, output_dir: Path, step: int) -> "Interrupted":
        """After a KeyboardInterrupt out of ``trainer.train()`` (a second Ctrl-C): the hooks are
        removed, a checkpoint the abort cut short is deleted (rank 0), and the one-line error."""
        self.close()
        if distributed.is_main():
            checkpoint.drop_incomplete_checkpoints(output_dir)
        good = checkpoint.checkpoints(output_dir, complete_only=True)
        keep = f"the newest checkpoint is {good[-1]}; continue with --resume" if good else "no checkpoint was saved"
        what = "a second SIGINT" if self.signum else "SIGINT"
        return Interrupted(f"aborted by {what} after step {step}, without saving; {keep}", signal.SIGINT)

    def stop_error(self, output_dir: Path) -> RunStopped | None:
        """After ``trainer.train()``: the exception (for the CLI's exit status) if the run was stopped."""
        if self.diverged:
            step, what = self.diverged
            good = checkpoint.checkpoints(output_dir, complete_only=True)
            keep = f"the last good checkpoint is {good[-1]}" if good else "no checkpoint was saved (see --save_steps)"
            return DivergedError(f"training diverged at step {step}: {what}; stopped without saving, {keep}")
        if self.interrupted:
            step, signum = self.interrupted
            return Interrupted(f"stopped by {signal.Signals(signum).name} at step {step}; saved "
                               f"{output_dir / f'checkpoint-{step}'}; continue with --resume", signum)
        return None
