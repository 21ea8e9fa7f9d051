"""Coupled structures of a model: the weights that must go together for a unit to be removable.

An MLP neuron j lives in several modules at once: its input weights (the output channel j of
GPT-2's c_fc, of Llama's gate_proj and up_proj, of OPT's fc1, with the bias entry j where there is
one) and its output weights (the input channel j of c_proj, down_proj, fc2). Only when all of them
go can the MLP be made narrower. :data:`FAMILIES` says, once per architecture family, which child
modules hold the two sides and which config field holds the width; the neuron pattern and the
physical shrink (export) both read it from :func:`mlp_structures`.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

try:  # transformers is a dependency, but keep this module importable without it
    from transformers.pytorch_utils import Conv1D
except Exception:  # pragma: no cover
    Conv1D = ()  # type: ignore[assignment]

# The layers a pattern can prune: nn.Linear (out, in) and GPT-2's Conv1D, which stores (in, out).
PRUNABLE = (nn.Linear, Conv1D) if Conv1D else (nn.Linear,)


def out_dim_of(module: nn.Module) -> int:
    """The axis of ``module.weight`` holding the output channels: 0 for nn.Linear, 1 for Conv1D."""
    return 1 if Conv1D and isinstance(module, Conv1D) else 0


@dataclass(frozen=True)
class Family:
    """One architecture family's MLP: the child modules on each side of the neurons."""

    name: str
    inputs: tuple[str, ...]  # children whose output channels are the neurons
    outputs: tuple[str, ...]  # children whose input channels are the neurons
    width_field: str  # the model config's field for the MLP width


FAMILIES = (
    Family("GPT-2", ("c_fc",), ("c_proj",), "n_inner"),
    Family("Llama", ("gate_proj", "up_proj"), ("down_proj",), "intermediate_size"),
    Family("OPT", ("fc1",), ("fc2",), "ffn_dim"),
)


@dataclass
class Member:
    """One weight of a coupled structure: ``axis`` is the axis of ``module.weight`` indexing the
    units; ``bias`` says whether ``module.bias`` holds one entry per unit (input side only)."""

    name: str  # dotted module name
    module: nn.Module
    axis: int
    bias: bool

    @property
    def weight(self):
        return self.module.weight


@dataclass
class Structure:
    """The units of one MLP: ``width`` neurons, each spanning every member at the same index."""

    name: str  # dotted name of the module holding the members
    family: Family
    members: list[Member]
    width: int


def _family_of(module: nn.Module) -> Family | None:
    children = dict(module.named_children())
    for fam in FAMILIES:
        names = fam.inputs + fam.outputs
        if all(isinstance(children.get(n), PRUNABLE) for n in names):
            return fam
    return None


def mlp_structures(model: nn.Module) -> list[Structure]:
    """Every MLP of ``model`` whose family :data:`FAMILIES` knows, in ``named_modules`` order."""
    found = []
    for name, module in model.named_modules():
        fam = _family_of(module)
        if fam is None:
            continue
        members = []
        for side, names in ((0, fam.inputs), (1, fam.outputs)):
            for child in names:
                m = getattr(module, child)
                out_dim = out_dim_of(m)
                axis = out_dim if side == 0 else 1 - out_dim
                bias = side == 0 and getattr(m, "bias", None) is not None
                members.append(Member(f"{name}.{child}" if name else child, m, axis, bias))
        widths = {int(m.weight.shape[m.axis]) for m in members}
        if len(widths) != 1:  # not an MLP after all (e.g. a projection pair of other widths)
            continue
        found.append(Structure(name, fam, members, widths.pop()))
    return found


def removed_units(s: Structure):
    """Which units of ``s`` are gone in a finalized model: every output-side weight of the unit is
    exactly zero, so the unit contributes nothing whatever its inputs (a bool tensor of ``width``)."""
    gone = None
    for m in s.members[len(s.family.inputs):]:
        zero = (m.weight == 0).all(dim=1 - m.axis)
        gone = zero if gone is None else gone & zero
    return gone


def unit_parameters(s: Structure) -> int:
    """Parameters one unit of ``s`` holds across its members (its bias entries included)."""
    return sum(m.weight.numel() // s.width + int(m.bias) for m in s.members)
