"""`pdp-gpt2 sweep`: run a W&B sweep file locally (see pdp_gpt2.train.sweep)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pdp_gpt2.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="W&B sweep file (YAML), e.g. sweep_config.yaml")
    parser.add_argument("--output_dir", required=True, help="sweep directory: trial-NNN/ per trial and sweep.csv")
    parser.add_argument("--count", type=int, default=None,
                        help="trials to run: grid keeps the first N combinations (default: all); "
                             "random/bayes draw N (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random search's draws (default: 0)")
    parser.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                        help="fix a train flag for every trial, overriding the file (repeatable), "
                             "e.g. --set model=embedded --set max_length=64")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="shortcut for --set max_steps=N (quick sweeps)")
    parser.add_argument("--trial_timeout", type=float, default=None,
                        help="seconds before a trial is killed and recorded as failed (default: none)")
    parser.add_argument("--dry_run", action="store_true",
                        help="check every planned trial's flags as `pdp-gpt2 train` would, print them and exit")


def parse_overrides(items: list[str], max_steps: int | None) -> dict:
    from pdp_gpt2.train.sweep_spec import train_flags

    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        name = name.strip().lstrip("-")
        if not sep or not name:
            raise UsageError(f"--set expects FLAG=VALUE, got {item!r}")
        if name not in train_flags():
            raise UsageError(f"--set {name}: unknown train flag (see `pdp-gpt2 train --help`)")
        out[name] = value
    if max_steps is not None:
        if max_steps <= 0:
            raise UsageError(f"--max_steps must be > 0, got {max_steps}")
        out["max_steps"] = max_steps
    return out


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UsageError(message)


def check_trials(trials: list[tuple[str, dict]]) -> None:
    """Each trial's flags through the train command's own parser and TrainConfig, as its `pdp-gpt2
    train` would check them before any work: the first bad value is one UsageError naming its trial."""
    from pdp_gpt2.cli.train import add_arguments, config_from_args
    from pdp_gpt2.train.sweep import trial_argv

    parser = _RaisingParser(prog="pdp-gpt2 train")
    add_arguments(parser)
    for name, params in trials:
        try:
            config_from_args(parser.parse_args(trial_argv(params)))
        except UsageError as e:
            raise UsageError(f"{name}: {e}") from None


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.train import sweep, sweep_dir, sweep_spec

    if args.count is not None and args.count <= 0:
        raise UsageError(f"--count must be > 0, got {args.count}")
    spec = sweep_spec.load_spec(args.config)
    overrides = parse_overrides(args.set, args.max_steps)
    if args.dry_run:
        trials = sweep_spec.planned(spec, args.count, args.seed, overrides)
        check_trials(trials)
        out = Path(args.output_dir)  # what the run would refuse there, said now (nothing is written)
        sweep_dir.check_sweep_files(out, Path(args.config).read_text())
        sweep_dir.check_trial_dirs(trials, out)
        for name, params in trials:
            print(name, " ".join(sweep.trial_argv(params)))
        return 0
    out = Path(args.output_dir)
    result = sweep.run_sweep_file(args.config, out, count=args.count, seed=args.seed, overrides=overrides,
                                  timeout=args.trial_timeout, settings=vars(args))
    n, failed, top, metric = len(result["rows"]), result["failed"], result["best"], result["metric"]
    print(f"pdp-gpt2 sweep: {n - failed} ok, {failed} failed; table in {out / 'sweep.csv'}")
    if top:
        print(f"  best ({result['goal']} {metric}): {top['trial']}  {metric}={top[metric]:.4g}")
    return 0 if failed < n else 1
