"""Baseline mask drivers, the same :class:`~pdp_gpt2.pdp.driver.MaskDriver` contract as PDP.

* ``magnitude``: one-shot; the floor(r n) smallest |w| of each tensor are pruned at attach, at the
  final target, and the mask is frozen (the schedule's ``set_sparsity`` calls are ignored).
* ``gmp``: gradual magnitude pruning (Zhu & Gupta 2017) on PDP's schedule, the mask recomputed
  after every optimizer step from |w * mask|, so pruned weights stay pruned: a pruned weight gets
  no gradient, and letting it back in whenever a kept one shrank below it would make the mask flicker.
* ``wanda`` (pdp/wanda.py) and ``sparsegpt`` (pdp/sparsegpt.py) use ``HardMask`` from here.

Keep-masks of every target are selected together (pdp/select.py). ``HardMask`` multiplies by a
0/1 keep-mask buffer: pruned weights get exactly zero gradient, and checkpoints carry the mask.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp import sharded as S
from pdp_gpt2.pdp.driver import MaskDriver
from pdp_gpt2.pdp.fused import mask_counts
from pdp_gpt2.pdp.param import final_values
from pdp_gpt2.pdp.patterns import Part, Pattern
from pdp_gpt2.pdp.targets import Target


def keep_from_scores(scores: torch.Tensor, sparsity: float, *, pattern: Pattern, out_dim: int) -> torch.Tensor:
    """Boolean keep-mask pruning the lowest ``scores`` (same shape as the weight).

    Exactly floor(r n) zeros for 'unstructured', floor(r rows) whole output rows
    for 'row', and floor(r M) (at most M - N) per group of M inputs for N:M.
    """
    return pattern.keep(scores, out_dim, pattern.num_pruned(scores.shape, out_dim, sparsity))


class HardMask(nn.Module):
    """Parametrization w -> w * keep (then fake-quant if ``bits``)."""

    soft = False

    def __init__(self, shape, out_dim: int, bits: int | None = None):
        super().__init__()
        self.out_dim, self.bits = out_dim, bits
        self.register_buffer("keep", torch.ones(shape, dtype=torch.bool))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = w * self.keep  # a product, not a where(): d out / d w = keep, so pruned weights get 0 gradient
        return M.fake_quant(out, self.bits, self.out_dim) if self.bits is not None else out

    def recipe(self, w: torch.Tensor):
        """Recompute this forward's output in backward instead of keeping it (pdp/recompute.py).
        No snapshot of ``keep`` is needed: the product above saves ``keep`` for its own
        backward, so autograd already refuses a backward after ``keep`` changed in place."""
        return lambda: self.forward(w)

    @torch.no_grad()
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """The mask as floats (what stats, mask histograms and MaskAwareAdamW read)."""
        return self.keep.to(w.dtype)

    @torch.no_grad()
    def local_soft_mask(self, part: Part) -> torch.Tensor:
        return part.mine(self.keep).to(part.w.dtype)

    @torch.no_grad()
    def final_keep(self, part: Part) -> torch.Tensor:
        return part.mine(self.keep)

    @torch.no_grad()
    def final_local(self, part: Part, keep: torch.Tensor) -> torch.Tensor:
        return final_values(part, keep, self.bits)

    @torch.no_grad()
    def final_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Exact zeros as +0.0 (a product leaves -0.0 for negative pruned weights, and saved bytes
        should not depend on the signs of weights that are gone), as PDPMask.final_weight."""
        part = Part(w, self.out_dim)
        return self.final_local(part, self.final_keep(part))

    def to_identity(self) -> None:
        """Mask nothing from now on (a finalized or removed sharded model keeps its parametrizations)."""
        self.keep.fill_(True)
        self.bits = None


class HardPruner(MaskDriver):
    """Hard 0/1 masks from scores (|w| by default): the keep-mask is a buffer, so it travels in
    the model's state_dict and a resumed run continues with the same mask."""

    keeps_history = True

    def make_mask(self, t: Target) -> nn.Module:
        bits = self.config.bits if self.config.quantize else None
        return HardMask(t.module.weight.shape, t.out_dim, bits)

    def score(self, t: Target, w: torch.Tensor) -> torch.Tensor:
        return w.abs()

    def update(self, t: Target, sparsity: float) -> None:
        self.update_all([t], [sparsity])

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        parts = [self.part(t) for t in targets]
        scored = [Part(self.score(t, p.w), p.out_dim, p.shard) for t, p in zip(targets, parts)]
        self._set_keeps(targets, scored, sparsities)

    def _set_keeps(self, targets, scored: list[Part], sparsities) -> None:
        """Keep-masks pruning the lowest scores of every target together, into the masks' buffers."""
        ks = [self.pattern.num_pruned(p.shape, p.out_dim, s) for p, s in zip(scored, sparsities)]
        for t, p, keep in zip(targets, scored, self.pattern.keeps(scored, ks, self.kernels)):
            whole = keep if p.shard is None else S.gather_dim0(keep, p.shard)  # every rank holds all of keep
            self.mask_of(t).keep.copy_(whole)


class Magnitude(HardPruner):
    """One-shot: the smallest |w| at the final target, pruned at attach, then frozen."""

    description = "one-shot magnitude pruning, then fine-tuning with the mask frozen"
    one_shot = True


class GMP(HardPruner):
    """Gradual magnitude pruning on the schedule; pruned weights stay pruned (module docstring)."""

    description = "gradual magnitude pruning while fine-tuning (hard masks on the same schedule as PDP)"

    def start(self) -> None:
        pass  # starts dense: the schedule's set_sparsity moves it

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
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
            self._set_keeps(todo, scored, todo_s)
