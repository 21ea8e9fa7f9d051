"""`pdp-gpt2 pretrain`: train the tokenizer and densely pretrain the small embedded GPT-2."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.pretrain import PretrainConfig

HELP = {
    "dataset": "dataset spec: 'shakespeare' (embedded), local .txt files/globs, or a HF dataset NAME[:CONFIG]",
    "vocab_size": "byte-level BPE vocabulary size (the tokenizer is trained on the train split only)",
    "n_layer": "number of transformer blocks",
    "n_embd": "hidden size",
    "n_head": "attention heads (must divide n_embd)",
    "n_positions": "context length; also the training block size and the evaluation window",
    "dropout": "dropout for residual, embedding and attention",
    "epochs": "passes over the train split (fractional allowed)",
    "max_steps": "optimizer steps; overrides --epochs when > 0",
    "batch_size": "blocks per optimizer step",
    "learning_rate": "peak AdamW learning rate",
    "min_lr_ratio": "final learning rate as a fraction of the peak (cosine decay)",
    "warmup_steps": "linear warm-up steps",
    "weight_decay": "AdamW weight decay on matrices (not on biases or LayerNorm)",
    "grad_clip": "max gradient norm",
    "seed": "random seed (init, block offsets and order)",
    "eval_batch_size": "windows per batch in the final perplexity evaluation",
    "eval_every": "validation perplexity every N steps (non-overlapping windows), written to pretrain_curve.jsonl; "
                  "the model with the best one is kept (early stopping). 0 = evaluate only at the end",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="where to write the HF model directory, tokenizer, PRETRAIN.md and pretrain.json")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="torch CPU threads; 1 avoids oversubscription when another job shares the cores "
                             "(default: 0 = torch's choice)")
    defaults = PretrainConfig()
    for f in fields(PretrainConfig):
        value = getattr(defaults, f.name)
        parser.add_argument(f"--{f.name}", type=type(value), default=value,
                            help=f"{HELP[f.name]} (default: {value})")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    positive = ["vocab_size", "n_layer", "n_embd", "n_head", "n_positions", "batch_size", "eval_batch_size"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UsageError(f"--{name} must be positive, got {getattr(cfg, name)}")
    if cfg.n_embd % cfg.n_head:
        raise UsageError(f"--n_head {cfg.n_head} does not divide --n_embd {cfg.n_embd}")
    if cfg.n_positions < 4:
        raise UsageError(f"--n_positions must be at least 4, got {cfg.n_positions}")
    if cfg.vocab_size < 257:
        raise UsageError(f"--vocab_size must exceed the 256 byte symbols, got {cfg.vocab_size}")
    if cfg.epochs <= 0 and cfg.max_steps <= 0:
        raise UsageError("give a positive --epochs or --max_steps")
    if not 0 <= cfg.dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if cfg.learning_rate <= 0:
        raise UsageError(f"--learning_rate must be positive, got {cfg.learning_rate}")
    return cfg


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.train.pretrain import pretrain

    import torch

    cfg = config_from_args(args)
    if args.num_threads < 0:
        raise UsageError(f"--num_threads must be >= 0, got {args.num_threads}")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    record = pretrain(cfg, args.output_dir, command="pdp-gpt2 " + shlex.join(sys.argv[1:]))
    for split in ("validation", "test"):
        r = record["eval"][split]
        print(f"{split}: perplexity {r['perplexity']:.2f} over {r['tokens']:,} tokens "
              f"(unigram baseline {r['unigram_perplexity']:.1f})")
    print(f"wrote {args.output_dir} in {record['wall_seconds']:.0f} s")
    return 0
