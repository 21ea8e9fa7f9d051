"""What the report knows about a method, asked of the method registry (``pdp_gpt2.pdp.registry``,
which imports no torch), never by comparing its name: whether it prunes at all (the dense reference
does not), whether tau applies, whether its mask is soft, how a title names it, its colour, and which
method the findings are about (``SHIPPED``; every other pruning method is a baseline of it).

A summary.json may name a method this process does not know (a plugin installed where the run
trained but not here, a summary older than the ``method`` key): it is read as a pruning method
named by itself, with no tau, labelled by its name and given a spare colour.
"""
from __future__ import annotations

from functools import lru_cache

from pdp_gpt2.pdp import registry

SHIPPED = registry.SHIPPED


@lru_cache(maxsize=None)
def spec(name: str) -> registry.MethodSpec:
    try:
        return registry.get(name)
    except (KeyError, ImportError, AttributeError, TypeError):  # unknown here, or a plugin that does not load
        return registry.MethodSpec(name, driver=name)


def reference() -> registry.MethodSpec:
    """The method without masks, whose runs are the 'dense fine-tuned' line of every plot."""
    return next(s for s in registry.BUILTIN if not s.prunes)


def method_of(label: str) -> str:
    """'pdp+improved@tau=0.05' -> 'pdp': a variant label starts with its method's name."""
    return label.split("+", 1)[0].split("@", 1)[0].split(" ", 1)[0]


def title(label: str) -> str:
    """How a title names a method ('PDP', 'GMP'): its registered label; a variant label as it is."""
    return spec(label).display if method_of(label) == label else label


def is_baseline(name: str) -> bool:
    """A pruning method other than the shipped one (built in or a plugin)."""
    return spec(name).prunes and name != SHIPPED


def colour(name: str) -> str:
    """The method's registered colour, '' if it declares none."""
    return spec(name).colour
