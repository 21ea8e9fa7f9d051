"""GMP: gradual magnitude pruning (Zhu & Gupta 2017) on PDP's schedule.

The mask is recomputed after every optimizer step from |w * mask|, so pruned weights stay pruned:
a pruned weight gets no gradient, and letting it back in whenever a kept one shrank below it would
make the mask flicker.
"""
from __future__ import annotations

import math

import torch

from pdp_gpt2.pdp.core.hard import HardPruner
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import sharded as S
from pdp_gpt2.pdp.kernels.fused import mask_counts
from pdp_gpt2.pdp.patterns import Part

class GMP(HardPruner):
    """Gradual magnitude pruning on the schedule; pruned weights stay pruned (module docstring)."""

    description = "gradual magnitude pruning while fine-tuning (hard masks on the same schedule as PDP)"

    def start(self) -> None:
        pass  # starts dense: the schedule's set_sparsity moves it

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        groups, group_s = self.groups_of(targets, sparsities)
        if groups and groups[0].coupled:
            self._update_structures(groups, group_s)
            return
        parts = [self.part(t) for t in targets]
        masks = [self.mask_of(t) for t in targets]
        keeps = [p.mine(m.keep) for p, m in zip(parts, masks)]
        # One host transfer for every target: entries pruned now, and kept entries that are nonzero
        # (summed over the shards; every rank holds the whole keep-mask, so pruned is not summed).
        counts = []
        if parts:
            c = torch.stack([mask_counts(p.w, k, self.kernels) for p, k in zip(parts, keeps)])
            c[:, 1] = S.all_reduce(c[:, 1].contiguous(), parts[0].group)
            if parts[0].shard is not None:
                c[:, 0] = torch.stack([(~m.keep).sum() for m in masks]).double()
            counts = c.tolist()
        todo, scored, todo_s = [], [], []
        for t, p, keep, s, (pruned, nnz) in zip(targets, parts, keeps, sparsities, counts):
            n = M.num_pruned(math.prod(p.shape), s)
            k = self.pattern.num_pruned(p.shape, p.out_dim, s)
            # Between sparsity changes (after the ramp: every step) the counts can show that the mask
            # would come back unchanged, instead of a selection over the tensor.
            if pruned == n and self.pattern.keep_is_nonzero(p.shape, p.out_dim, k, int(nnz)):
                continue
            score = p.w.abs()
            if pruned <= n:
                score = score * keep  # pruned stay pruned: they score 0, so they are chosen first again
            todo.append(t)
            scored.append(Part(score, p.out_dim, p.shard))
            todo_s.append(s)
        if todo:
            by_lead = {g.lead.name: g for g in groups}
            self._set_keeps([by_lead[t.name] for t in todo], scored, todo_s)

    def _update_structures(self, groups, sparsities) -> None:
        """A coupled pattern's units: their norms, pruned units held at 0 once the count is reached
        (as for single weights above; a unit's keep is the same in every member, so the lead's says it)."""
        parts = [self.group_part(g) for g in groups]
        unit_keeps = [g.members[0].slot.any(self.mask_of(g.lead).keep) for g in groups]
        pruned = torch.stack([(~k).sum() for k in unit_keeps]).tolist()  # one host read for every group
        scored = [Part(p.w * k, 0) if n <= self.pattern.num_pruned(p.shape, p.out_dim, s) else p
                  for p, k, n, s in zip(parts, unit_keeps, pruned, sparsities)]
        self._set_keeps(groups, scored, sparsities)
