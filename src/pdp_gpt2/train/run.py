"""One pruning run, start to finish:

    load model + data -> dense perplexity -> attach masks -> Trainer (schedule via the public
    PruningCallback) -> soft perplexity -> finalize -> hard perplexity -> final/ + summary.json

The engine is Hugging Face ``Trainer``: mixed precision, gradient accumulation,
checkpoints and ``torchrun``/``accelerate launch`` come from it, not from us.
Under several processes every rank trains and evaluates, rank 0 alone writes files
(distributed.py says why the masks agree).  ``guard.RunGuard`` turns a signal into a
checkpoint and a NaN loss into DivergedError; a resumed run continues bit-identically
(tests/train/test_resume.py).
"""
from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path

from transformers import default_data_collator, set_seed
from transformers.trainer_callback import ProgressCallback

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.data.lmeval import check_task_data
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.callback import PruningCallback, read_checkpoint_state
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.optim import MaskAwareAdamW
from pdp_gpt2.pdp.kernels.sharded import barrier
from pdp_gpt2.train import checkpoint, distill, distributed, flags, rundir, runlock
from pdp_gpt2.train.args import fused_adamw_ok, training_args
from pdp_gpt2.train.calibration import calibration_blocks
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.train.dense_cache import dense_perplexity
from pdp_gpt2.train.evaluation import evaluate, task_scores
from pdp_gpt2.train.guard import RunGuard, evaluating
from pdp_gpt2.train.hf_trainer import (BarProgress, MaskHistCallback, RecordCheckpointFiles, RunMetrics, RunTrainer,
                                       SaveTrained, TrainClock, resume_without_training)
from pdp_gpt2.train.metrics_log import MetricsLog, read_saved
from pdp_gpt2.train.prepare import prepare, run_name
from pdp_gpt2.train.steps import plan_steps
from pdp_gpt2.train.summary import finish_run
from pdp_gpt2.train.tracking import make_tracker


def pruning_callback(model, cfg: TrainConfig, ramp: int, train_data, kernels=None) -> PruningCallback:
    """The public PruningCallback for cfg.method (dense too: it writes the checkpoints' completion
    marker), attached to ``model`` now: the mask-aware optimizer needs the pruner before Trainer
    exists.  It does not finalize: the run evaluates the soft model first.  ``train_data``: the
    prepared training blocks (a method's calibration set comes from them).  ``kernels``: fused.KernelOptions."""
    calibration = calibration_blocks(train_data, cfg.seed) if registry.get(cfg.method).calibration else None
    callback = PruningCallback(cfg.pdp, method=cfg.method, ramp_steps=ramp, schedule=cfg.schedule, finalize=False,
                               log_layers=False, calibration=calibration, kernels=kernels)
    callback.attach(model)
    return callback


@runlock.release_claims  # the lock is released however run() ends; a full disk is one line
def run(cfg: TrainConfig, kernels=None) -> dict:
    if cfg.eval_tasks:  # a missing extra, a mistyped task name or data that cannot load fail now, not after training
        check_task_data(cfg.eval_tasks)  # lm-eval's index is built once per process: the evaluation reuses it
    prep = prepare(cfg)
    out = prep.output_dir
    is_main = distributed.is_main()
    if is_main and (warning := flags.ignored_warning(cfg)):  # not refused: a sweep sets tau for every method
        print(warning, file=sys.stderr, flush=True)
    n_blocks = len(prep.train_data) if not cfg.streaming else None
    saved = read_checkpoint_state(prep.resume_from) if prep.resume_from is not None else None
    total, ramp = plan_steps(n_blocks, cfg, distributed.world_size(), planned=(saved or {}).get("schedule"))
    args = training_args(cfg, out, total)  # under torchrun this joins the process group
    barrier()  # every rank has read the run directory (prepare) before rank 0 changes it
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.overwrite_output_dir and not prep.resume_from:
            rundir.clear_run(out)
        checkpoint.drop_unusable_checkpoints(out, prep.resume_from)
        rundir.remove_leftovers(out)  # temporary files of writes a kill cut short (we hold the lock)
        atomic_write_json(out / "run_config.json", flags.recorded(cfg))
    set_seed(cfg.seed)
    model = prep.model
    eval_seconds: dict = {}  # each evaluation's wall time, into summary.json (a cached dense one has none)
    ppl_dense = dense_perplexity(model, prep, cfg, is_main, eval_seconds)
    # the teacher: the starting model, copied before any mask goes on (a resume makes it again from --model)
    teacher = distill.frozen_copy(model) if cfg.distill else None

    callback = pruning_callback(model, cfg, ramp, prep.train_data, kernels)  # kernels: the CLI reads them from env
    callback.resume_from = prep.resume_from  # maybe in another run directory (a fork)
    pruner = callback.pruner
    if pruner is not None and saved:
        pruner.load_state_dict(saved)  # global budgets are from the original dense weights
    metrics = None
    if is_main:
        # rewritten from the checkpoint's copy of its lines (or, without one, cut to its step):
        # lines past the checkpoint will be logged again, and a line cut off since comes back
        saved_lines = read_saved(prep.resume_from)
        metrics = MetricsLog(out / "metrics.jsonl", resume_step=checkpoint.step_of(prep.resume_from),
                             saved=saved_lines and saved_lines["records"])
    tracker = make_tracker(cfg.use_wandb and is_main, cfg.wandb_project, run_name(cfg), flags.recorded(cfg), out)
    opt = None
    if cfg.custom_optimizer and pruner is not None:
        opt = (MaskAwareAdamW, {"pruner": pruner, "lr": cfg.learning_rate, "fused": fused_adamw_ok() or None})
    guard = RunGuard()
    clock = TrainClock(before=(saved or {}).get("train_seconds", 0.0 if prep.resume_from is None else None))
    run_metrics = RunMetrics(metrics, tracker, is_main, resume_from=prep.resume_from, clock=clock)
    trainer = RunTrainer(model=model, args=args, data_collator=default_data_collator,
                         # none when nothing trains: Trainer refuses a stream without --max_steps > 0
                         train_dataset=prep.train_data if total > 0 else None,
                         # RunMetrics after PruningCallback: it writes the values PruningCallback logs;
                         # its saver before, whose pdp_state.json marks a checkpoint complete
                         callbacks=[run_metrics.saver, callback, guard, run_metrics],
                         optimizer_cls_and_kwargs=opt)
    trainer.loss_window = run_metrics.window
    trainer.distill_from(teacher, cfg.distill, cfg.distill_temperature)
    if trainer.pop_callback(ProgressCallback) is not None:  # present unless --progress false
        trainer.add_callback(BarProgress())
    trainer.add_callback(MaskHistCallback())  # after PruningCallback, so it sees each step's thresholds
    trainer.add_callback(clock)
    trainer.add_callback(RecordCheckpointFiles(clock))  # sizes and time so far into pdp_state.json
    trainer.add_callback(SaveTrained(guard))  # after the guard: a checkpoint at the last step, unless diverged
    try:
        # total 0: nothing to train (Trainer would read max_steps=0 as "count epochs"); a checkpoint at the last step
        evaluate_only = total > 0 and resume_without_training(trainer, prep.resume_from, total)
        if total > 0 and not evaluate_only:
            trainer.train(resume_from_checkpoint=str(prep.resume_from) if prep.resume_from else None)
    except KeyboardInterrupt:  # a second Ctrl-C: one line and exit 130, no half-written checkpoint left
        tracker.finish()
        raise guard.aborted(out, trainer.state.global_step) from None
    finally:
        guard.close()  # also when training raised (a full disk): the caller's signal handlers come back
    train_seconds = clock.seconds()  # every segment of a resumed run; None if an older checkpoint kept no time
    if (stopped := guard.stop_error(out)) is not None:  # a signal (checkpoint saved) or a NaN loss: no final/
        tracker.finish()
        raise stopped
    if not is_main:  # the other ranks hold the same weights; rank 0 evaluates and writes
        tracker.finish()
        return {}

    # The trained state is in checkpoint-<last step> (SaveTrained; none when nothing trained): a failure or
    # a signal from here on loses nothing, --resume evaluates it and finishes (resume_without_training).
    trained = (None if total == 0 else prep.resume_from if evaluate_only
               else out / f"checkpoint-{trainer.state.global_step}")
    try:
        with guard_evaluating(trained):
            ppl_soft, stats = None, None
            if pruner is not None:
                pruner.set_sparsity(cfg.pdp.sparsity)  # a run stopped before the end of the ramp still ends at target
                stats = pruner.stats()
                ppl_soft = evaluate(model, prep.eval_tokens, cfg, "eval soft", eval_seconds)
                callback.finalize()
            ppl_hard = evaluate(model, prep.eval_tokens, cfg, "eval pruned", eval_seconds)
            lm_eval = task_scores(model, prep.tokenizer, cfg, out) if cfg.eval_tasks else None
            result = dict(lm_eval=lm_eval, ppl_dense=ppl_dense, ppl_soft=ppl_soft, ppl_hard=ppl_hard, stats=stats,
                          train_steps=trainer.state.global_step, train_seconds=train_seconds, ramp_steps=ramp,
                          eval_tokens=int(len(prep.eval_tokens)), eval_seconds=eval_seconds)
            summary = finish_run(cfg, model, prep.tokenizer, out, result, tracker)
    except UsageError as e:  # e.g. lm-eval data gone since the check: the training is not lost
        if trained is None or not trained.is_dir():
            raise
        raise UsageError(f"{e}; the trained model is saved in {trained}: --resume evaluates it") from None
    finally:
        tracker.finish()
    if (trained is not None and trained.parent == out and trained.is_dir()
            and (not cfg.save_steps or trainer.state.global_step % cfg.save_steps)):
        checkpoint.remove_checkpoint(trained)  # made only to survive the evaluations; the run has finished
    return summary


def guard_evaluating(trained: Path | None):
    """SIGINT / SIGTERM during the evaluations as one line naming ``trained`` (guard.evaluating); without
    a trained checkpoint (nothing trained) they keep their usual meaning."""
    return evaluating(trained) if trained is not None else nullcontext()


