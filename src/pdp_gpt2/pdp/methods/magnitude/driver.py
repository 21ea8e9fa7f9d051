"""Magnitude: one-shot; the floor(r n) smallest |w| of each tensor are pruned at attach, at the
final target, and the mask is frozen (the schedule's ``set_sparsity`` calls are ignored)."""
from __future__ import annotations

from pdp_gpt2.pdp.core.hard import HardPruner

class Magnitude(HardPruner):
    """One-shot: the smallest |w| at the final target, pruned at attach, then frozen."""

    description = "one-shot magnitude pruning, then fine-tuning with the mask frozen"
    one_shot = True
