"""Trainer's settings for a run: its TrainingArguments, and whether the fused AdamW kernel runs
here (the optimizer both Trainer and the mask-aware AdamW use where it can)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from transformers import TrainingArguments

from pdp_gpt2.train.config import TrainConfig


def fused_adamw_ok() -> bool:
    """Whether AdamW(fused=True) runs here (CPU and CUDA; Trainer's own default where it can).

    Beyond being one kernel instead of a dozen per tensor, the fused CPU kernel avoids
    a slow path of the per-tensor loop: its sqrt of the second moment is several times
    slower on exact zeros, which pruned weights put there (docs/performance.md).
    """
    return torch.cuda.is_available() or not (torch.backends.mps.is_available() or _has_xpu())


def _has_xpu() -> bool:
    return bool(getattr(torch, "xpu", None)) and torch.xpu.is_available()


def training_args(cfg: TrainConfig, output_dir: Path, total_steps: int) -> TrainingArguments:
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
