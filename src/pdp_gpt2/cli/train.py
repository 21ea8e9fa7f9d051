"""`pdp-gpt2 train` (and the root main.py): flags -> TrainConfig -> train.run.

Every flag is generated from a dataclass field, so the help text, the default
and the validation live in one place (config.py; the defaults that depend on
other flags: train/flags.py).  Flag spellings are the
original tool's (``--num_epochs``, ``--use_wandb``, ...).  Boolean flags accept
``--flag``, ``--flag true|false`` and ``--flag=True`` (the form ``wandb agent`` passes).
"""
from __future__ import annotations

import argparse
import dataclasses
import os

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.train import flags
from pdp_gpt2.train.config import PDPConfig, TrainConfig


# Optional fields need an explicit element type; everything else takes its default's type.
_TYPES = {"output_dir": str, "run_name": str, "resume": str, "warmup_steps": int, "eval_stride": int, "tau_final": float,
          "eval_tasks": str,
          "targets": lambda s: [p.strip() for p in s.split(",") if p.strip()]}
_METAVAR = {"resume": "CHECKPOINT"}


def str2bool(v: str) -> bool:
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "y", "on"):
        return True
    if s in ("0", "false", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {v!r}")


def _add_field(group, f: dataclasses.Field, default) -> None:
    flag = f"--{f.name}"
    help_ = flags.help_of(f)  # --method's lists the registry's methods, plugins included
    if f.name == "resume":
        group.add_argument(flag, nargs="?", const="latest", default=None, metavar=_METAVAR["resume"], help=help_)
    elif isinstance(default, bool):
        group.add_argument(flag, nargs="?", const=True, default=default, type=str2bool, metavar="BOOL",
                           help=f"{help_} (default: {default})")
    else:
        typ = _TYPES.get(f.name) or type(default)
        group.add_argument(flag, type=typ, default=default, help=f"{help_} (default: {default})")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    titles = {f.name: "pruning (every method)" for f in dataclasses.fields(PDPConfig)}
    for spec in registry.BUILTIN:  # a method's own settings under its name
        if spec.prunes and spec.config is not None:
            titles.update(dict.fromkeys(spec.config_class().own_fields(), f"--method {spec.name}"))
    groups = {}
    defaults = flags.cli_defaults()
    for f in flags.fields():
        title = titles.get(f.name, "run")
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        if f.name == "sparsity":  # filled in after parsing: an N:M pattern implies its own
            group.add_argument("--sparsity", type=float, default=None,
                               help=f"{f.metadata['help']} (default: 0.9; (M-N)/M for an N:M pattern)")
        else:
            _add_field(group, f, defaults[f.name])


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args)
    pdp_kw = {f.name: values[f.name] for f in dataclasses.fields(PDPConfig)}
    if pdp_kw["sparsity"] is None:
        pdp_kw["sparsity"] = flags.default_sparsity(pdp_kw["pattern"])  # N:M implies its own
    train_kw = {f.name: values[f.name] for f in dataclasses.fields(TrainConfig) if f.name != "pdp"}
    return TrainConfig(**train_kw, pdp=PDPConfig(**pdp_kw))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from pdp_gpt2.train.run import run as train_run  # checks --eval_tasks' names first, before any work

    train_run(cfg, kernels=kernel_options(os.environ))
    return 0


def kernel_options(environ) -> KernelOptions:
    """PDP_GPT2_COMPILE=0 / PDP_GPT2_FLUSH=0 / PDP_GPT2_RECOMPUTE=0 switch PDP's kernel compilation /
    gradient flush / backward recompute of masked weights off, PDP_GPT2_COLLECT=fixed|compact picks how
    threshold selection collects candidates (ablations and benchmarks; the only place the package reads
    these variables)."""
    def on(name: str) -> bool:
        return environ.get(name, "1").strip().lower() not in ("0", "false", "no", "off")

    collect = environ.get("PDP_GPT2_COLLECT", "auto").strip().lower()
    if collect not in ("auto", "fixed", "compact"):
        raise UsageError(f"PDP_GPT2_COLLECT must be auto, fixed or compact, got {collect!r}")
    return KernelOptions(compile=on("PDP_GPT2_COMPILE"), flush=on("PDP_GPT2_FLUSH"),
                         recompute=on("PDP_GPT2_RECOMPUTE"), collect=collect)
