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

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.train import distributed

from pdp_gpt2.train import checkpoint, distill, flags, rundir, runlock
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.callback import PruningCallback, read_checkpoint_state
from pdp_gpt2.pdp.kernels.sharded import barrier
from pdp_gpt2.pdp.core.schedule import plan_end
from pdp_gpt2.train.hf_trainer import (BarProgress, MaskHistCallback, RecordCheckpointFiles, RunMetrics, RunTrainer,
                                       SaveTrained, TrainClock, resume_without_training)
from pdp_gpt2.train.metrics_log import MetricsLog, read_saved
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.tracking import make_tracker


@dataclass
class Prepared:
    model: torch.nn.Module
    tokenizer: object
    train_data: torch.utils.data.Dataset  # LMBlockDataset, or StreamingBlocks with --streaming
    eval_tokens: torch.Tensor
    output_dir: Path
    resume_from: Path | None


def default_output_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{run_name(cfg)}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_name(cfg: TrainConfig) -> str:
    if cfg.run_name:
        return cfg.run_name
    model = Path(cfg.model).name or cfg.model
    return f"{model}-{cfg.method}-s{cfg.pdp.sparsity:g}" if registry.get(cfg.method).prunes else f"{model}-{cfg.method}"


def prepare(cfg: TrainConfig) -> Prepared:
    """Everything that can fail on bad input, before anything is written."""
    from pdp_gpt2.data.sources import LMBlockDataset, check_local, load_split_texts, token_stream, tokenize_and_group
    from pdp_gpt2.data.models import load_model_and_tokenizer
    from pdp_gpt2.data.perplexity import context_length
    from pdp_gpt2.pdp.core.attach import check_fit

    distributed.refuse_sharded()
    refuse_unused_precision(cfg.precision)
    check_local(cfg.dataset)  # a directory, a missing file, files misnamed for their splits: before the model loads
    if cfg.output_dir:
        output_dir = Path(cfg.output_dir)
    elif cfg.resume and cfg.resume != "latest":
        output_dir = Path(cfg.resume).parent  # --resume run/checkpoint-N continues run/, not a new directory
    else:
        output_dir = default_output_dir(cfg)
    runlock.claim(output_dir, lock=distributed.is_main())  # create + lock first: nothing else is written before
    resume_from = rundir.check_output_dir(output_dir, overwrite=cfg.overwrite_output_dir, resume=cfg.resume)
    if resume_from is not None:
        check_resume_config(cfg, resume_from)
    model, tokenizer = load_model_and_tokenizer(cfg.model)
    # the method's driver, --targets and --pattern against the model's shapes: refused now, not after the
    # dense evaluation
    check_fit(model, cfg.method, cfg.pdp)
    context = context_length(model.config)
    if context and cfg.max_length > context:
        raise UsageError(f"--max_length {cfg.max_length} exceeds the model's context of {context} tokens")
    if cfg.streaming:
        from pdp_gpt2.data.streaming import open_stream

        train_data, eval_tokens = open_stream(cfg, tokenizer)
    else:
        train_blocks = tokenize_and_group(tokenizer, load_split_texts(cfg.dataset, "train"), cfg.max_length)
        if len(train_blocks) == 0:
            raise UsageError(f"dataset {cfg.dataset!r} has fewer than {cfg.max_length} training tokens")
        train_data = LMBlockDataset(train_blocks)
        eval_tokens = token_stream(tokenizer, load_split_texts(cfg.dataset, cfg.eval_split))
    if len(eval_tokens) < 2:
        raise UsageError(f"dataset {cfg.dataset!r} has no {cfg.eval_split} text to evaluate on")
    return Prepared(model, tokenizer, train_data, eval_tokens, output_dir, resume_from)


def refuse_unused_precision(precision: str) -> None:
    """fp16 mixed precision needs CUDA: elsewhere Trainer trains in fp32 without a word, and the run's
    record would say fp16 (bf16 autocast runs on the CPU too)."""
    if precision == "fp16" and not torch.cuda.is_available():
        raise UsageError("--precision fp16 needs a CUDA GPU; without one the run would train in fp32 while its "
                         "record says fp16: use --precision fp32 or bf16")


# Flags that change what a run computes: a resume must not change them (the masks, the data
# order, the optimizer state and the schedules' plan in the checkpoint belong to the old values).
# --max_steps / --num_epochs may change: a longer run continues the planned schedules (plan_steps).
SAME_ON_RESUME = ("model", "dataset", "streaming", "method", "seed", "batch_size", "gradient_accumulation_steps",
                  "max_length", "learning_rate", "weight_decay", "lr_scheduler", "lr_warmup_steps", "max_grad_norm",
                  "custom_optimizer", "precision", "schedule", "warmup_steps", "warmup_epochs", "distill",
                  "distill_temperature", "pdp")


def check_resume_config(cfg: TrainConfig, checkpoint: Path) -> None:
    """One check for ``--resume`` and ``--resume DIR/checkpoint-N``: the flags the checkpoint depends on
    equal those of the run that wrote it (``run_config.json`` in the checkpoint's run directory,
    wherever the resumed run writes)."""
    run_dir = checkpoint.parent
    path = run_dir / "run_config.json"
    try:
        old_cfg = json.loads(path.read_text())
        if not isinstance(old_cfg, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as e:
        why = "there is none" if not path.is_file() else f"it does not parse ({e})"
        raise UsageError(f"--resume {checkpoint}: the flags it was trained with cannot be checked: {path}: {why}; "
                         "resume from a checkpoint inside the run directory that wrote it") from None

    def flat(d: dict) -> dict:  # PDP fields are flags too (--sparsity, --tau, ...)
        out = {**{k: v for k, v in d.items() if k in SAME_ON_RESUME and k != "pdp"}, **(d.get("pdp") or {})}
        if out.get("warmup_steps") is not None:
            out.pop("warmup_epochs", None)  # ignored next to --warmup_steps: a change to it changes nothing
        return out

    old, new = flat(old_cfg), flat(flags.recorded(cfg))  # a flag the method ignores may change
    changed = [k for k in new if k in old and old[k] != new[k]]
    if changed:
        raise UsageError(f"--resume with different {', '.join('--' + k for k in changed)} than the run in "
                         f"{run_dir} (see its run_config.json); resume with the same flags")


def steps_per_epoch(n_blocks: int, cfg: TrainConfig, world: int) -> int:
    micro = math.ceil(n_blocks / (cfg.batch_size * world))
    return max(1, micro // cfg.gradient_accumulation_steps)


def plan_steps(n_blocks: int | None, cfg: TrainConfig, world: int, planned: dict | None = None) -> tuple[int, int]:
    """(total optimizer steps, sparsity-ramp steps).  A stream (n_blocks None) counts --max_steps as its epoch.
    ``planned``: the schedule plan of the checkpoint a run resumes from (its pdp_state.json), which the
    run continues: its ramp, whatever the new length (docs/runs.md, the resume contract)."""
    per_epoch = steps_per_epoch(n_blocks, cfg, world) if n_blocks is not None else cfg.max_steps
    total = cfg.max_steps if cfg.max_steps >= 0 else math.ceil(cfg.num_epochs * per_epoch)
    length = f"--max_steps {cfg.max_steps}" if cfg.max_steps >= 0 else f"--num_epochs {cfg.num_epochs:g}"
    if planned:
        end = plan_end(planned)
        if total < end:
            raise UsageError(f"--resume: {length} ends the run at step {total}, before the schedules planned when it "
                             f"started end at step {end} (sparsity ramp {planned['ramp_steps']} steps, tau "
                             f"{planned.get('tau_schedule', 'constant')}); resume with --max_steps {end} or more")
        return total, int(planned["ramp_steps"])
    if total == 0:  # --max_steps 0: no training (config.py allows it for methods that prune at attach)
        return 0, 0
    if cfg.warmup_steps is not None:
        if cfg.warmup_steps > total:  # the ramp would end past the last step, short of the target
            raise UsageError(f"--warmup_steps {cfg.warmup_steps} is longer than the run ({total} steps of {length}): "
                             f"the sparsity would not reach its target; use at most {total}")
        return total, cfg.warmup_steps  # asked for explicitly: as given
    ramp = round(cfg.warmup_epochs * per_epoch)
    if ramp >= total and total > 1:
        # A --max_steps shorter than --warmup_epochs would reach the target only on the
        # last step, with no steps left to recover at it: ramp over the first half instead.
        print(f"pdp-gpt2: --warmup_epochs {cfg.warmup_epochs:g} is longer than the run ({total} steps); "
              f"ramping sparsity over the first {total // 2} steps (set --warmup_steps to choose)", flush=True)
        ramp = total // 2
    return total, ramp


def evaluate(model, tokens, cfg: TrainConfig, desc: str, seconds: dict | None = None) -> float:
    """Perplexity on ``tokens``; its wall time goes into ``seconds`` under desc's last word (dense, soft, pruned)."""
    from pdp_gpt2.data.perplexity import perplexity

    t0 = time.perf_counter()
    # cached(): each masked weight is computed once for the whole evaluation, not per batch.
    with parametrize.cached():
        ppl = perplexity(model, tokens, window=cfg.max_length, stride=cfg.stride,
                         batch_size=cfg.eval_batch_size, progress=cfg.progress, desc=desc)["perplexity"]
    if seconds is not None:
        seconds[desc.split()[-1]] = round(time.perf_counter() - t0, 2)
    return ppl


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


def calibration_blocks(train_data, seed: int, n_blocks: int = 32) -> torch.Tensor:
    """``n_blocks`` of the prepared training blocks, drawn by ``seed`` (wanda's calibration set).

    A stream (--streaming) yields the in-memory path's blocks in the same order, so it gives the
    same draw: one pass counts them, a second picks the drawn ones (memory stays flat)."""
    from pdp_gpt2.data.sources import LMBlockDataset

    gen = torch.Generator().manual_seed(seed)
    if isinstance(train_data, LMBlockDataset):
        return train_data.blocks[torch.randperm(len(train_data), generator=gen)[:n_blocks]]
    drawn = torch.randperm(sum(1 for _ in train_data.blocks()), generator=gen)[:n_blocks].tolist()
    wanted = set(drawn)
    picked = {i: block for i, block in enumerate(train_data.blocks()) if i in wanted}
    return torch.stack([picked[i] for i in drawn])


def fused_adamw_ok() -> bool:
    """Whether AdamW(fused=True) runs here (CPU and CUDA; Trainer's own default where it can).

    Beyond being one kernel instead of a dozen per tensor, the fused CPU kernel avoids
    a slow path of the per-tensor loop: its sqrt of the second moment is several times
    slower on exact zeros, which pruned weights put there (docs/performance.md).
    """
    return torch.cuda.is_available() or not (torch.backends.mps.is_available() or _has_xpu())


def _has_xpu() -> bool:
    return bool(getattr(torch, "xpu", None)) and torch.xpu.is_available()


def training_args(cfg: TrainConfig, output_dir: Path, total_steps: int):
    from transformers import TrainingArguments

    # accelerate deprecates broadcast_buffers in favour of an option Trainer does not expose yet;
    # False is still what we mean (see below), so its warning is noise in every DDP run.
    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)

    return TrainingArguments(
        output_dir=str(output_dir), max_steps=total_steps, per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay, warmup_steps=cfg.lr_warmup_steps, lr_scheduler_type=cfg.lr_scheduler,
        max_grad_norm=cfg.max_grad_norm, logging_steps=cfg.log_interval, seed=cfg.seed, data_seed=cfg.seed,
        save_strategy="steps" if cfg.save_steps else "no", save_steps=cfg.save_steps or 500,
        report_to="none", disable_tqdm=not cfg.progress, eval_strategy="no", remove_unused_columns=False,
        bf16=cfg.precision == "bf16", fp16=cfg.precision == "fp16", use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, optim="adamw_torch_fused" if fused_adamw_ok() else "adamw_torch",
        # Masks are recomputed from identical weights on every rank (distributed.py); broadcasting
        # the mask buffers before every forward would only cost bandwidth (a baseline's keep-mask
        # is as large as its weight) and would hide a rank that disagreed.
        ddp_broadcast_buffers=False, ddp_find_unused_parameters=False,  # every weight takes part in forward
    )


@runlock.release_claims  # the lock is released however run() ends; a full disk is one line
def run(cfg: TrainConfig, kernels=None) -> dict:
    from transformers import default_data_collator, set_seed
    from transformers.trainer_callback import ProgressCallback

    from pdp_gpt2.train.guard import RunGuard
    from pdp_gpt2.train.summary import finish_run

    if cfg.eval_tasks:  # a missing extra, a mistyped task name or data that cannot load fail now, not after training
        from pdp_gpt2.data.lmeval import check_task_data

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
        from pdp_gpt2.pdp.core.optim import MaskAwareAdamW

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
    if (digest := distributed.digest_callback()) is not None:
        trainer.add_callback(digest)
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
    from contextlib import nullcontext

    from pdp_gpt2.train.guard import evaluating

    return evaluating(trained) if trained is not None else nullcontext()


def task_scores(model, tokenizer, cfg: TrainConfig, out: Path) -> dict:
    """lm-evaluation-harness on the pruned model: the full result in lm_eval.json, {task/metric: value} returned."""
    from pdp_gpt2.data.lmeval import evaluate_tasks, markdown_table, scores

    r = evaluate_tasks(model, tokenizer, cfg.eval_tasks, batch_size=cfg.eval_batch_size)
    atomic_write_json(out / "lm_eval.json", r)
    print(markdown_table(r))
    return scores(r)


def dense_perplexity(model, prep: Prepared, cfg: TrainConfig, is_main: bool, seconds: dict | None = None) -> float:
    """The dense model's perplexity, computed once per run and read back on resume (dense_eval.json)."""
    path = prep.output_dir / rundir.DENSE_EVAL
    key = {"model": cfg.model, "dataset": cfg.dataset, "eval_split": cfg.eval_split, "window": cfg.max_length,
           "stride": cfg.stride, "eval_tokens": int(len(prep.eval_tokens))}
    if prep.resume_from is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached["key"] == key:
                return valid_perplexity(cached["perplexity"])
        except (OSError, ValueError, KeyError, TypeError) as e:  # a cut-off or edited file: not worth a traceback
            if is_main:
                print(f"pdp-gpt2: warning: {path} does not hold a dense perplexity ({type(e).__name__}: {e}); "
                      "computing it again", file=sys.stderr, flush=True)
    ppl = evaluate(model, prep.eval_tokens, cfg, "eval dense", seconds)
    if is_main:
        atomic_write_json(path, {"perplexity": ppl, "key": key})
    return ppl


def valid_perplexity(value) -> float:
    """``value`` if it can be a perplexity (a finite number >= 1: exp of a mean NLL >= 0), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf:
        raise ValueError(f"perplexity {value!r} is not a finite number >= 1")
    return float(value)
