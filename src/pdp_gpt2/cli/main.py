"""`pdp-gpt2` entry point: a thin dispatcher.

Each subcommand lives in its own ``cli/<name>.py`` module exposing
``add_arguments(parser)`` and ``run(args) -> int``; the modules import their
library lazily (inside ``run``) so ``pdp-gpt2 --help`` stays fast and an optional
dependency of one command never breaks another.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from pdp_gpt2.errors import UsageError

# name -> (module, one-line help)
SUBCOMMANDS = {
    "train": ("pdp_gpt2.cli.train", "fine-tune a causal LM while PDP prunes it to a target sparsity"),
    "eval": ("pdp_gpt2.cli.eval", "sliding-window perplexity, or lm-eval task scores (--tasks), of any finished model or export"),
    "pretrain": ("pdp_gpt2.cli.pretrain", "densely pretrain the small embedded GPT-2 on the bundled corpus"),
    "sweep": ("pdp_gpt2.cli.sweep", "run a W&B sweep file locally: one subprocess per trial, sweep.csv"),
    "report": ("pdp_gpt2.cli.report", "plots + report.md + self-contained report.html from runs or sweeps"),
    "export": ("pdp_gpt2.cli.export", "write a finalized sparse model as dense, compressed or 2:4 files, with a size table"),
    "generate": ("pdp_gpt2.cli.generate", "generate text from any model or export (--runtime sparse: CSR kernels), with tokens/s"),
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag gets one line (not the whole usage block) and exit 2."""

    def error(self, message: str):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pdp-gpt2", description="Prune Hugging Face causal LMs with PDP while fine-tuning.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        try:
            command = importlib.import_module(module)
        except ModuleNotFoundError as e:  # a subcommand not built yet must not break the others
            if e.name != module:
                raise
            continue
        command.add_arguments(sub.add_parser(name, help=help_, description=help_))
    return parser


def _quiet_transformers() -> None:
    """Keep stderr for our own messages: no per-load progress bars or advisory warnings."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def main(argv: list[str] | None = None) -> int:
    """The ``pdp-gpt2`` command (``argv`` None: this process's own command line)."""
    try:
        return _main(argv)
    finally:
        if argv is None:  # the process ends after this: its exit-time handlers are ours to keep quiet
            quiet_exit()


def quiet_exit() -> None:
    """A Ctrl-C while the interpreter exits lands in some library's exit-time handler (joining its
    workers, flushing a log) and prints its traceback, though every file of ours is complete by then.
    Instead: one line, and the exit goes on; a second Ctrl-C ends the process at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    pressed = []

    def handler(signum, frame):
        if pressed:
            os._exit(128 + signum)
        pressed.append(signum)
        print("pdp-gpt2: interrupted while exiting; nothing is left to save (Ctrl-C again to quit at once)",
              file=sys.stderr, flush=True)

    signal.signal(signal.SIGINT, handler)


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help"):
        argv = ["train", *argv]  # `pdp-gpt2 --sparsity 0.9` == `pdp-gpt2 train --sparsity 0.9`
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    _quiet_transformers()
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UsageError as e:
        print(f"pdp-gpt2 {args.command}: error: {e}", file=sys.stderr)
        return 2
    except RuntimeError as e:
        from pdp_gpt2.train.guard import RunStopped  # diverged: 3; SIGINT/SIGTERM: 128 + signal, checkpoint saved

        if not isinstance(e, RunStopped):
            raise
        print(f"pdp-gpt2 {args.command}: {e}", file=sys.stderr)
        return e.exit_status


if __name__ == "__main__":
    sys.exit(main())
