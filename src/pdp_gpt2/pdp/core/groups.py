"""What one selection ranks: a :class:`Group` of targets whose units go together.

For a per-tensor pattern every target is its own group (one member, no axis), and drivers rank it
as they always did. For a coupled pattern (pdp/patterns/coupled.py) a group is one structure, such
as an MLP: its members are the targets holding the units, each with the axis that indexes them,
and the biases that hold one entry per unit. :func:`group` checks the targets against the model's
structures, before any work: a structure is pruned whole or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.patterns import Pattern
from pdp_gpt2.pdp.patterns.slot import Slot


@dataclass
class Member:
    target: Target
    slot: Slot | None  # where the weight holds the units; None: the whole tensor is the group
    bias: Slot | None = None  # where the module's bias holds them, if it does (zeroed with them at finalize)


@dataclass
class Group:
    name: str
    members: list[Member] = field(default_factory=list)

    @property
    def coupled(self) -> bool:
        return self.members[0].slot is not None

    @property
    def lead(self) -> Target:
        """The member whose sparsity budget the group takes (all members' are equal under 'layer')."""
        return self.members[0].target


def group(model: nn.Module, pattern: Pattern, targets: list[Target], explicit: bool) -> tuple[list[Target], list[Group]]:
    """(the targets to mask, the groups they form).  ``explicit``: the user named the targets, so a
    target outside every structure is refused instead of left dense.  UsageError in one line."""
    if not pattern.coupled:
        return targets, [Group(t.name, [Member(t, None)]) for t in targets]
    by_name = {t.name: t for t in targets}
    structures = pattern.structures(model)
    if not structures:
        raise UsageError(f"pattern {pattern.name!r}: no structure of a known architecture family in this model "
                         "(pdp/patterns/structures.py lists GPT-2, Llama and OPT)")
    chosen, groups, covered = [], [], set()
    for s in structures:
        present = [m for m in s.members if m.name in by_name]
        if not present:
            continue
        if len(present) < len(s.members):
            missing = ", ".join(m.name for m in s.members if m.name not in by_name)
            raise UsageError(f"pattern {pattern.name!r} prunes {s.name}'s units in every weight they span: "
                             f"targets must name {missing} too")
        members = [Member(by_name[m.name], m.slot, m.bias_slot if m.bias else None) for m in s.members]
        chosen += [m.target for m in members]
        covered |= {m.name for m in s.members}
        groups.append(Group(s.name, members))
    outside = [t.name for t in targets if t.name not in covered]
    if outside and explicit:
        raise UsageError(f"pattern {pattern.name!r}: {outside[0]} is not part of any of its structures; "
                         "leave it out of targets")
    if not groups:
        raise UsageError(f"pattern {pattern.name!r}: none of the targets is part of one of its structures")
    return chosen, groups
