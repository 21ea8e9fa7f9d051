"""What the report knows about a method, asked of the method registry (``pdp_gpt2.pdp.core.registry``,
which imports no torch), never by comparing its name: whether it prunes at all (the dense reference
does not), whether tau applies, whether its mask is soft, its label and colour hints, and which
method the findings are about (``SHIPPED``; every other pruning method is a baseline of it).

A summary.json may name a method this process does not know (a plugin installed where the run
trained but not here, a summary older than the ``method`` key): it is read as a pruning method
named by itself, with no tau, labelled by its name and given a spare colour.  So is the run of a
plugin that is installed here but cannot be used, after one warning line naming its package.
"""
from __future__ import annotations

import sys
from pdp_gpt2.pdp.core import registry

SHIPPED = registry.SHIPPED


# Warned about once per process: a report asks about the same run's method many times.
_unusable: set[str] = set()


def spec(name: str) -> registry.MethodSpec:
    """The method's spec as the registry has it now (it is not cached: a method may be registered later)."""
    try:
        return registry.get(name)
    except KeyError:  # unknown here
        pass
    except registry.PluginError as e:  # installed, but it cannot be used: say so once
        if str(e) not in _unusable:
            _unusable.add(str(e))
            print(f"pdp-gpt2: warning: {e}", file=sys.stderr, flush=True)
    return registry.MethodSpec(name, driver=name)


def reference() -> registry.MethodSpec:
    """The method without masks, whose runs are the 'dense fine-tuned' line of every plot."""
    return next(s for s in registry.BUILTIN if not s.prunes)


def method_of(label: str) -> str:
    """'pdp+improved@tau=0.05' -> 'pdp': a variant label starts with its method's name."""
    return label.split("+", 1)[0].split("@", 1)[0].split(" ", 1)[0]


# How titles name the built-in methods; a registered label hint comes first, else the name itself.
LABELS = {"pdp": "PDP", "gmp": "GMP", "wanda": "Wanda", "sparsegpt": "SparseGPT"}


def title(label: str) -> str:
    """How a title names a method ('PDP', 'GMP'); a variant label as it is."""
    if method_of(label) != label:
        return label
    return spec(label).label or LABELS.get(label, label)


def is_baseline(name: str) -> bool:
    """A pruning method other than the shipped one (built in or a plugin)."""
    return spec(name).prunes and name != SHIPPED


_bad_colours: set[tuple[str, str]] = set()  # warned about once per process


def colour(name: str) -> str:
    """The method's registered colour hint; '' if it declares none, or one matplotlib cannot draw (a
    plugin's typo must not cost the report: the method gets a spare colour, in one warning line)."""
    c = spec(name).colour
    if not c:
        return ""
    from matplotlib.colors import is_color_like  # the report draws with matplotlib anyway

    if is_color_like(c):
        return c
    if (name, c) not in _bad_colours:
        _bad_colours.add((name, c))
        print(f"pdp-gpt2: warning: method {name!r} registers the colour {c!r}, which matplotlib cannot draw; "
              "its plots use a spare colour", file=sys.stderr, flush=True)
    return ""
