"""Patterns whose units span several tensors, such as an MLP neuron (c_fc's column j, its bias j and
c_proj's row j) or an attention head (pdp/patterns/structures.py says which weights couple, per
architecture family, and pdp/patterns/slot.py where each tensor holds the units).

A coupled pattern names the model's structures (``structures``) and scores unit j from every member
(``unit_sq``). Everything else is :class:`Pattern`'s per-entry machinery run on that vector of one
score per unit, so thresholds, keep-masks and counts are the same code as for single weights; the
driver then applies a unit's mask or keep to each member along its axis (:meth:`Slot.spread`).

Score normalisation: each member contributes the mean square of its entries at unit j (a bias entry
pools with its own weight's slice), and the members' mean squares are summed. A member's size then
does not weigh in: c_fc's 768 inputs and c_proj's 768 outputs count alike, as would 3,072 of them,
and a head's query, key, value and output weights count alike whatever their share of the head.
"""
from __future__ import annotations

import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.patterns.base import Pattern
from pdp_gpt2.pdp.patterns.slot import Slot
from pdp_gpt2.pdp.patterns.structures import Structure, head_structures, mlp_structures


class CoupledPattern(Pattern):
    """The base of patterns that couple tensors: a subclass defines ``name``, ``help`` and ``structures``."""

    coupled = True  # the driver groups targets by ``structures`` (pdp/core/groups.py)
    default_sparsity = 0.5

    def structures(self, model) -> list[Structure]:
        """The model's coupled structures (each a list of members and a width)."""
        raise NotImplementedError

    def check(self, sparsity, allocation):
        if allocation == "global":
            raise UsageError(f"pattern {self.name!r} prunes the same number of units in every layer, so that "
                             "the model can be made smaller: use allocation 'layer'")

    @staticmethod
    def unit_sq(pools: list[list[tuple[torch.Tensor, Slot]]]) -> torch.Tensor:
        """The squared score of every unit: the sum over ``pools`` (one per member: its weight and,
        where it has one, its bias, each with its :class:`Slot`) of the pool's mean square at the unit."""
        total = None
        for pool in pools:
            ss, per_unit = None, 0
            for x, slot in pool:
                sq = slot.sum(x * x)
                ss = sq if ss is None else ss + sq
                per_unit += slot.per_unit(x)
            term = ss / per_unit
            total = term if total is None else total + term
        return total

    def member_mask(self, sq: torch.Tensor, shape, slot: Slot, t, tau: float, tau_mode: str, beta) -> torch.Tensor:
        """PDP's soft mask of the units (squared scores ``sq``, threshold ``t``) for one member."""
        return slot.spread(M.mask_from_gap(M.normalized_gap(sq, t.to(sq.dtype), tau_mode), tau, beta), shape)


class Neurons(CoupledPattern):
    """Whole MLP neurons, every weight of one together, the same count in every layer."""

    name = "neurons"
    help = ("whole MLP neurons: a neuron's input weights and bias and its output weights together "
            "(GPT-2 c_fc/c_proj, Llama gate/up/down, OPT fc1/fc2), so export --shrink makes the MLP narrower")

    def structures(self, model):
        return mlp_structures(model)


class Heads(CoupledPattern):
    """Whole attention heads (with grouped-query attention, a key/value head and its query heads)."""

    name = "heads"
    help = ("whole attention heads: a head's query, key and value weights and its output weights together "
            "(Llama: a key/value head with its query heads), so export --shrink gives Llama fewer heads; "
            "GPT-2 and OPT heads are zeroed but stay, their head_dim being tied to the hidden size")

    def structures(self, model):
        return head_structures(model)
