"""A run's checks and loads, before anything is written: the output directory (created and
locked, resume flags checked), the model and tokenizer, the method's fit to the model's shapes,
and the training blocks and evaluation tokens. Every user mistake is refused here, in one line.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pdp_gpt2.data.models import load_model_and_tokenizer
from pdp_gpt2.data.perplexity import context_length
from pdp_gpt2.data.sources import LMBlockDataset, check_local, load_split_texts, token_stream, tokenize_and_group
from pdp_gpt2.data.streaming import open_stream
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.attach import check_fit
from pdp_gpt2.train import distributed, rundir, runlock
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.train.resume import check_resume_config


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
