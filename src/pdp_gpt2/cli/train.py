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


def method_fields() -> dict[str, list[dataclasses.Field]]:
    """{method: its own config fields} for every method this process holds (built-ins and those
    registered here; an installed plugin's once it is loaded).  A config that cannot be imported
    brings no flags (``--method`` of it is refused, in one line, when the run is configured)."""
    out = {}
    for spec in registry.registered():
        if spec.prunes and spec.config is not None:
            try:
                cls = spec.config_class()
            except (ImportError, AttributeError):
                continue
            own = set(cls.own_fields())
            out[spec.name] = [f for f in dataclasses.fields(cls) if f.name in own]
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    titles = {f.name: "pruning (every method)" for f in dataclasses.fields(PDPConfig)}
    own = method_fields()
    for name, fs in own.items():  # a method's own settings under its name
        titles.update(dict.fromkeys((f.name for f in fs), f"--method {name}"))
    groups = {}

    def group_of(title: str):
        return groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))

    defaults = flags.cli_defaults()
    for f in flags.fields():
        group = group_of(titles.get(f.name, "run"))
        if f.name == "sparsity":  # filled in after parsing: an N:M pattern implies its own
            group.add_argument("--sparsity", type=float, default=None,
                               help=f"{f.metadata['help']} (default: 0.9; (M-N)/M for an N:M pattern)")
        else:
            _add_field(group, f, defaults[f.name])
    for name, fs in own.items():  # the settings of a method outside the flat PDPConfig (one registered here)
        for f in fs:
            if f.name not in defaults:
                _add_field(group_of(f"--method {name}"), f, f.default)


def method_config(args: argparse.Namespace):
    """The config ``--method``'s driver gets from these flags: its own config class, its own fields included."""
    from pdp_gpt2.pdp.core.attach import own_config  # torch: only once a run is configured

    cfg = config_from_args(args)
    spec = registry.get(cfg.method)
    extra = {f.name: vars(args)[f.name] for f in method_fields().get(cfg.method, []) if f.name not in cfg.pdp.to_dict()}
    return own_config(spec, cfg.pdp, extra) if spec.prunes else None


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    values = vars(args)
    pdp_kw = {f.name: values[f.name] for f in dataclasses.fields(PDPConfig)}
    if pdp_kw["sparsity"] is None:
        pdp_kw["sparsity"] = flags.default_sparsity(pdp_kw["pattern"])  # N:M implies its own
    train_kw = {f.name: values[f.name] for f in dataclasses.fields(TrainConfig) if f.name != "pdp"}
    return TrainConfig(**train_kw, pdp=PDPConfig(**pdp_kw))


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    # A train run records and resumes the flat PDPConfig: a setting outside it would be lost, so it is
    # refused before any work (pdp_gpt2.attach takes it: method_config, docs/architecture.md).
    flat = cfg.pdp.to_dict()
    if given := [(name, f.name) for name, fs in method_fields().items() for f in fs
                 if f.name not in flat and vars(args)[f.name] != f.default]:
        name, flag = given[0]
        raise UsageError(f"--{flag} (--method {name}'s own setting) is not carried by a train run yet; "
                         f"pass it in {name}'s config to pdp_gpt2.attach(model, {name!r}, config) in your own loop")
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
