"""Sparsity patterns: which entries of a weight are pruned together (geometry only).

:data:`PATTERNS` is the registry (display name -> class); adding a pattern is one subclass of
:class:`~pdp_gpt2.pdp.patterns.base.Pattern` and one entry here (docs/architecture.md has a toy).
:func:`get_pattern` parses a spec string such as "2:4"; :func:`help_text` is ``--pattern``'s list.
"""
from __future__ import annotations

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.patterns.base import Part, Pattern, Scores  # noqa: F401  (the package's face)
from pdp_gpt2.pdp.patterns.coupled import CoupledPattern, Heads, Neurons  # noqa: F401
from pdp_gpt2.pdp.patterns.kinds import NM, Row, Unstructured, parse_nm  # noqa: F401

# Process-wide on purpose, like the method registry: a pattern registers once, for every run in the process.
PATTERNS: dict[str, type[Pattern]] = {"unstructured": Unstructured, "row": Row, "N:M": NM, "neurons": Neurons,
                                   "heads": Heads}


def get_pattern(spec: str) -> Pattern:
    """The pattern a spec string names ('unstructured', 'row', '2:4', ...); UsageError if none does."""
    for cls in PATTERNS.values():
        p = cls.parse(spec)
        if p is not None:
            return p
    names = ", ".join(f"'{k}'" for k in PATTERNS)
    raise UsageError(f"unknown pattern {spec!r}: use one of {names} (N:M such as '2:4')")


def help_text() -> str:
    """Every registered pattern on one line, with its ``help``: what ``--help`` offers."""
    return "; ".join(f"{name}: {cls.help}" if cls.help else name for name, cls in PATTERNS.items())
