"""The flags of `pdp-gpt2 train` and their defaults, in one place for the CLI (cli/train.py builds
its parser from them) and for the model card (train/card.py writes the command that remakes a run,
naming only the flags that differ from their defaults) and the sweep runner (which flags exist).

Every flag is a field of TrainConfig or PDPConfig and defaults to the field's default, except two
whose default depends on other flags: ``--sparsity`` (an N:M pattern implies its own) and
``--tau_final`` (tau / 100 under an annealing tau schedule: PDPConfig.__post_init__).  Imports no
torch: the sweep runner and ``--help`` read it.
"""
from __future__ import annotations

import dataclasses

from pdp_gpt2.train.config import PDPConfig, TrainConfig

# Flags whose default is resolved from other flags after parsing (None until then).
DEPENDENT = ("sparsity", "tau_final")


def fields() -> list[dataclasses.Field]:
    """Every flag's dataclass field, run settings first, then PDP's."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name != "pdp"] + list(dataclasses.fields(PDPConfig))


def help_of(f: dataclasses.Field) -> str:
    """A flag's help.  ``--method``'s lists the methods the registry knows when the parser is built,
    installed plugins included (their entry points are named, not imported: a plugin that fails to
    load cannot break ``--help``)."""
    text = f.metadata.get("help", "")
    if f.name == "method":
        text += ": " + "; ".join(method_lines())
    elif f.name == "pattern":  # the pattern registry's list, so a new pattern is offered here
        from pdp_gpt2.pdp import patterns  # torch: only when a parser is built

        text += ": " + patterns.help_text()
    return text


def method_lines() -> list[str]:
    from pdp_gpt2.pdp.core import registry

    builtin = {s.name: s for s in registry.BUILTIN}
    return [f"{n}: {builtin[n].summary}" if n in builtin and builtin[n].summary else f"{n} (plugin)"
            for n in registry.names()]


def values(cfg: TrainConfig) -> dict[str, object]:
    """{flag name: its value in ``cfg``}: the run's and PDP's settings as one flat set of flags."""
    return {f.name: getattr(cfg.pdp if f.name in _PDP else cfg, f.name) for f in fields()}


def ignored(cfg: TrainConfig) -> tuple[str, ...]:
    """The flags ``cfg.method`` does not take (its MethodSpec's missing capabilities)."""
    from pdp_gpt2.pdp.core import registry

    return registry.get(cfg.method).ignored_flags()


def recorded(cfg: TrainConfig) -> dict:
    """``cfg`` as a run records it (run_config.json, summary.json's config, the tracker): every flag
    but those the method ignores, which change nothing in the run (--tau of a movement run)."""
    skip = set(ignored(cfg))
    d = cfg.to_dict()
    return {**{k: v for k, v in d.items() if k not in skip},
            "pdp": {k: v for k, v in d["pdp"].items() if k not in skip}}


def ignored_values(cfg: TrainConfig) -> dict[str, object]:
    """{flag: value} of the ignored flags given a value other than their default (worth a warning)."""
    defaults = cli_defaults(cfg.pdp)
    return {name: value for name, value in values(cfg).items()
            if name in ignored(cfg) and value != defaults[name]}


def ignored_warning(cfg: TrainConfig) -> str | None:
    """The one line a run prints for the flags its method ignores, or None."""
    given = ignored_values(cfg)
    if not given:
        return None
    named = ", ".join(f"--{k} {','.join(v) if isinstance(v, list) else v}" for k, v in given.items())
    return (f"pdp-gpt2: warning: --method {cfg.method} does not take {named}: ignored, and left out of the "
            "run's record")


def default_sparsity(pattern: str) -> float:
    """``--sparsity`` when not given: 0.9, or (M-N)/M for an N:M pattern."""
    from pdp_gpt2.pdp.patterns import get_pattern  # torch: only once a pattern is named

    return get_pattern(pattern).default_sparsity


def cli_defaults(pdp: PDPConfig | None = None) -> dict[str, object]:
    """{flag name: its value when the flag is not given}.  Without ``pdp`` (what the parser
    holds) the DEPENDENT ones are None; with it, they are resolved against its pattern, tau
    and tau schedule, as parsing a command line with those flags would resolve them."""
    out = {f.name: None if f.default is dataclasses.MISSING else f.default for f in fields()}
    if pdp is not None:
        out["sparsity"] = default_sparsity(pdp.pattern)
        out["tau_final"] = PDPConfig(tau=pdp.tau, tau_schedule=pdp.tau_schedule).tau_final
    else:
        out.update(dict.fromkeys(DEPENDENT))
    return out


_PDP = {f.name for f in dataclasses.fields(PDPConfig)}
