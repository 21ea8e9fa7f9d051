"""Coupled structures of a model: the weights that must go together for a unit to be removable.

An MLP neuron j lives in several modules at once: its input weights (the output channel j of
GPT-2's c_fc, of Llama's gate_proj and up_proj, of OPT's fc1, with the bias entry j where there is
one) and its output weights (the input channel j of c_proj, down_proj, fc2). An attention head does
the same across the query, key and value projections (its ``head_dim`` outputs in each) and the
output projection (its ``head_dim`` inputs); with grouped-query attention (Llama) the unit is one
key/value head together with the query heads that share it. Only when all of a unit's weights go
can the model be made narrower. :data:`FAMILIES` says, once per architecture family and kind, which
child modules hold the two sides, how each lays out its units (a :class:`Slot`), and how a config
holds fewer of them, or why it cannot (GPT-2 and OPT derive ``head_dim`` from the hidden size, so
their heads can be zeroed but not removed). The patterns (pdp/patterns/coupled.py), the run's
summary and the physical shrink (export/shrink.py) all read it from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from pdp_gpt2.pdp.patterns.slot import Slot

try:  # transformers is a dependency, but keep this module importable without it
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover
    Conv1D = ()  # type: ignore[assignment]

# The layers a pattern can prune: nn.Linear (out, in) and GPT-2's Conv1D, which stores (in, out).
PRUNABLE = (nn.Linear, Conv1D) if Conv1D else (nn.Linear,)


def out_dim_of(module: nn.Module) -> int:
    """The axis of ``module.weight`` holding the output channels: 0 for nn.Linear, 1 for Conv1D."""
    return 1 if Conv1D and isinstance(module, Conv1D) else 0


@dataclass
class Member:
    """One weight of a coupled structure: ``axis`` is the axis of ``module.weight`` indexing the
    units, laid out as (``outer``, units, ``inner``) (pdp/patterns/slot.py); ``bias`` says whether
    ``module.bias`` holds the units too, laid out the same way (input side only)."""

    name: str  # dotted module name
    module: nn.Module
    axis: int
    bias: bool
    outer: int = 1
    inner: int = 1

    @property
    def weight(self):
        return self.module.weight

    @property
    def slot(self) -> Slot:
        return Slot(self.axis, self.outer, self.inner)

    @property
    def bias_slot(self) -> Slot:
        return Slot(0, self.outer, self.inner)


@dataclass(frozen=True)
class Family:
    """One architecture family's structure of one kind: the child modules on each side of the units.

    ``field``: the config field counting the units per layer. ``layout(module)``: the number of
    units and each child's (outer, inner) (None: one index per unit). ``rewrite(config, units)``:
    writes a config with that many units, where setting ``field`` is not enough. ``fixed``: why the
    config cannot hold fewer units ('' when it can).
    """

    name: str
    kind: str  # what the units are, in words: "MLP neurons", "attention heads"
    inputs: tuple[str, ...]  # children whose output channels hold the units
    outputs: tuple[str, ...]  # children whose input channels hold the units
    field: str
    layout: Callable | None = None
    rewrite: Callable | None = None
    fixed: str = ""

    def resize(self, config, units: int) -> None:
        """Set ``config`` to ``units`` units per layer (only where ``fixed`` is empty)."""
        if self.rewrite is not None:
            self.rewrite(config, units)
        else:
            setattr(config, self.field, units)


def _gqa_layout(module) -> tuple[int, dict]:
    """Llama-style attention: a unit is one key/value head and the query heads that share it."""
    hd, groups = int(module.head_dim), int(module.num_key_value_groups)
    kv = module.k_proj.weight.shape[0] // hd
    return kv, {"q_proj": (1, groups * hd), "k_proj": (1, hd), "v_proj": (1, hd), "o_proj": (1, groups * hd)}


def _gqa_rewrite(config, units: int) -> None:
    """Fewer key/value heads, each with its query heads; ``head_dim`` written out, since its default
    (hidden_size // num_attention_heads) would change with the head count."""
    hd = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_kv = config.num_attention_heads // (getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    config.head_dim, config.num_key_value_heads, config.num_attention_heads = hd, units, units * per_kv


def _mha_layout(fused: str | None, out: str) -> Callable:
    def layout(module) -> tuple[int, dict]:
        hd = int(module.head_dim)
        heads = getattr(module, out).weight.shape[1 - out_dim_of(getattr(module, out))] // hd
        if fused:  # GPT-2's c_attn: the query, key and value thirds, each with every head
            return heads, {fused: (3, hd), out: (1, hd)}
        return heads, {"q_proj": (1, hd), "k_proj": (1, hd), "v_proj": (1, hd), out: (1, hd)}
    return layout


_TIED = "derives head_dim from the hidden size, so its config cannot hold fewer heads"
FAMILIES = (
    Family("GPT-2", "MLP neurons", ("c_fc",), ("c_proj",), "n_inner"),
    Family("Llama", "MLP neurons", ("gate_proj", "up_proj"), ("down_proj",), "intermediate_size"),
    Family("OPT", "MLP neurons", ("fc1",), ("fc2",), "ffn_dim"),
    Family("GPT-2", "attention heads", ("c_attn",), ("c_proj",), "n_head", _mha_layout("c_attn", "c_proj"),
           fixed="GPT-2 " + _TIED),
    Family("Llama", "attention heads", ("q_proj", "k_proj", "v_proj"), ("o_proj",), "num_key_value_heads",
           _gqa_layout, _gqa_rewrite),
    Family("OPT", "attention heads", ("q_proj", "k_proj", "v_proj"), ("out_proj",), "num_attention_heads",
           _mha_layout(None, "out_proj"), fixed="OPT " + _TIED),
)


@dataclass
class Structure:
    """The units of one module: ``width`` of them, each spanning every member at the same index."""

    name: str  # dotted name of the module holding the members
    family: Family
    members: list[Member]
    width: int


def _family_of(module: nn.Module, kind: str) -> Family | None:
    children = dict(module.named_children())
    for fam in FAMILIES:
        if fam.kind == kind and all(isinstance(children.get(n), PRUNABLE) for n in fam.inputs + fam.outputs):
            if fam.layout is None or hasattr(module, "head_dim"):
                return fam
    return None


def structures(model: nn.Module, kind: str) -> list[Structure]:
    """Every structure of ``kind`` in ``model`` whose family :data:`FAMILIES` knows, in module order."""
    found = []
    for name, module in model.named_modules():
        fam = _family_of(module, kind)
        if fam is None or (fam.layout is not None and hasattr(module, "q_attn")):  # GPT-2 cross-attention
            continue
        width, layouts = fam.layout(module) if fam.layout else (None, {})
        members = []
        for side, names in ((0, fam.inputs), (1, fam.outputs)):
            for child in names:
                m = getattr(module, child)
                out_dim = out_dim_of(m)
                outer, inner = layouts.get(child, (1, 1))
                members.append(Member(f"{name}.{child}" if name else child, m, out_dim if side == 0 else 1 - out_dim,
                                      side == 0 and getattr(m, "bias", None) is not None, outer, inner))
        widths = {m.slot.units(m.weight) for m in members}
        if len(widths) != 1 or (width is not None and widths != {width}):
            continue  # not this kind after all (e.g. a projection pair of other widths)
        found.append(Structure(name, fam, members, widths.pop()))
    return found


def mlp_structures(model: nn.Module) -> list[Structure]:
    return structures(model, "MLP neurons")


def head_structures(model: nn.Module) -> list[Structure]:
    return structures(model, "attention heads")


def removed_units(s: Structure):
    """Which units of ``s`` are gone in a finalized model: every output-side weight of the unit is
    exactly zero, so the unit contributes nothing whatever its inputs (a bool tensor of ``width``)."""
    gone = None
    for m in s.members[len(s.family.inputs):]:
        zero = ~m.slot.any(m.weight != 0)
        gone = zero if gone is None else gone & zero
    return gone


def unit_parameters(s: Structure) -> int:
    """Parameters one unit of ``s`` holds across its members (its bias entries included)."""
    return sum(m.slot.per_unit(m.weight) + (m.bias_slot.per_unit(m.module.bias) if m.bias else 0) for m in s.members)
