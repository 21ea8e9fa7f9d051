"""Compatibility entry point for users of the original tool:

    python main.py --sparsity 0.9 --tau 0.02 --num_epochs 3 --use_wandb

is the same as ``pdp-gpt2 train --sparsity 0.9 --tau 0.02 --num_epochs 3 --use_wandb``.
"""
import sys

from pdp_gpt2.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
