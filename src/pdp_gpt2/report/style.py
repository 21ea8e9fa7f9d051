"""One colour per method, in one place: every plot, the dashboard and the slides ask here.

A colour depends on the label alone, never on which labels share the figure, so ``gmp`` is the
same orange everywhere. A method's colour is the hint it registered (``MethodSpec.colour``), else
the built-ins' palette below; the shipped method's extensions have fixed colours; ``@tau=`` keeps its variant's colour with another
line style; a tau schedule does not hide an extension; ``+distill`` is its undistilled variant's
colour, dash-dotted with triangles, so the two read as a pair; any other label gets a stable pick
from a spare palette by a hash of the label.
"""
from __future__ import annotations

import zlib

from pdp_gpt2.report import methods

# The built-in methods' colours (a registered colour hint comes first).
METHOD_COLORS = {
    "pdp": "#2ca02c",        # green
    "dense": "#333333",      # near black: the reference line
    "magnitude": "#1f77b4",  # blue
    "gmp": "#ff7f0e",        # orange
    "wanda": "#9467bd",      # purple
    "movement": "#d62728",   # red
    "sparsegpt": "#e6ab02",  # gold
}
# The shipped method's extensions ('pdp+improved', ...), each against plain pdp on the extensions slide.
EXTENSION_COLORS = {
    "improved": "#17becf",  # cyan
    "q8": "#bcbd22",        # olive
    "maskopt": "#8c564b",   # brown
    "global": "#98df8a",    # light green
    "abs-tau": "#aec7e8",
}
ANNEALED_COLOR = "#e377c2"  # pink: pdp with a tau schedule, whatever the schedule is called
SPARE = ("#d62728", "#7f7f7f", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#ffbb78")
# The reference lines every plot draws the same way.
DENSE_LINE = {"color": METHOD_COLORS[methods.reference().name], "lw": 1.2}
BEFORE_LINE = {"color": "gray", "lw": 1, "ls": "--"}


def base(label: str) -> str:
    """'pdp+improved@tau=0.05' -> 'pdp+improved' (the tau suffix only changes the line style)."""
    return label.split("@", 1)[0]


DISTILL = "distill"


def _parts(b: str) -> list[str]:
    """'pdp+improved+tau-exp+distill' -> ['improved', 'tau-exp', 'distill'] (after the method)."""
    return [x for x in b.split("+")[1:] if x]


def distilled(label: str) -> bool:
    return DISTILL in _parts(base(label))


def color(label: str) -> str:
    b = base(label)
    method = methods.method_of(b)
    parts = _parts(b)
    if DISTILL in parts:  # the pair: a method and its distilled run share a colour
        return color("+".join([method, *(x for x in parts if x != DISTILL)]))
    if b == method and (c := methods.colour(method) or METHOD_COLORS.get(method)):
        return c
    extensions = [x for x in parts if not x.startswith("tau-")]
    if method == methods.SHIPPED and len(extensions) == 1 and extensions[0] in EXTENSION_COLORS:
        return EXTENSION_COLORS[extensions[0]]
    if not extensions and (parts or "anneal" in b):  # a tau schedule and nothing else
        return ANNEALED_COLOR
    return SPARE[zlib.crc32(b.encode()) % len(SPARE)]


def linestyle(label: str) -> str:
    if "@" in label:
        return "--"
    return "-." if distilled(label) else "-"


def marker(label: str) -> str:
    if "@" in label:
        return "s"
    return "^" if distilled(label) else "o"


def line_kw(label: str) -> dict:
    """Keyword arguments for ``ax.plot`` of one variant."""
    return {"color": color(label), "ls": linestyle(label), "marker": marker(label), "label": label}
