"""`pdp-gpt2 pretrain`: train the tokenizer and densely pretrain the small embedded GPT-2."""
from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.pretrain import PretrainConfig


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
                            help=f"{f.metadata['help']} (default: {value})")


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    return PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})  # validates


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
