"""Hard 0/1 masks, shared by the baselines: :class:`HardMask` (the parametrization
w -> w * keep, a buffer, so pruned weights get exactly zero gradient and checkpoints carry the
mask) and :class:`HardPruner` (a driver whose keep-masks prune the lowest scores of every target
together). :func:`final_values` is finalize's exact zeros for every mask, soft or hard.
"""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.core.mask import Mask
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import sharded as S
from pdp_gpt2.pdp.patterns import Part


class HardMask(Mask):
    """Parametrization w -> w * keep (then fake-quant if ``bits``)."""

    soft = False
    recomputable = True

    def __init__(self, shape, out_dim: int, bits: int | None = None):
        super().__init__()
        self.out_dim, self.bits = out_dim, bits
        self.register_buffer("keep", torch.ones(shape, dtype=torch.bool))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = w * self.keep  # a product, not a where(): d out / d w = keep, so pruned weights get 0 gradient
        return M.fake_quant(out, self.bits, self.out_dim) if self.bits is not None else out

    def recipe(self, w: torch.Tensor):
        """Recompute this forward's output in backward instead of keeping it (pdp/kernels/recompute.py).
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
        groups, sparsities = self.groups_of(targets, sparsities)
        self._set_keeps(groups, [self.scored(g) for g in groups], sparsities)

    def scored(self, g) -> Part:
        """What is ranked for group g: ``score`` of the target's weight, or a structure's unit norms."""
        if g.coupled:
            return self.group_part(g)
        p = self.part(g.lead)
        return Part(self.score(g.lead, p.w), p.out_dim, p.shard)

    def _set_keeps(self, groups, scored: list[Part], sparsities) -> None:
        """Keep-masks pruning the lowest scores of every group together, into the masks' buffers."""
        ks = [self.pattern.num_pruned(p.shape, p.out_dim, s) for p, s in zip(scored, sparsities)]
        for g, p, keep in zip(groups, scored, self.pattern.keeps(scored, ks, self.kernels)):
            whole = keep if p.shard is None else S.gather_dim0(keep, p.shard)  # every rank holds all of keep
            for m, k in zip(g.members, self.member_keeps(g, whole)):
                self.mask_of(m.target).keep.copy_(k)


def final_values(part: Part, keep: torch.Tensor, bits: int | None) -> torch.Tensor:
    """``part``'s rows with exact zeros where ``keep`` is False, then on the quantization grid.

    where(), not w * keep: a product leaves -0.0 for negative pruned weights, and a checkpoint's
    bytes should not depend on the signs of weights that are gone.  Quantization scales are
    per output channel; a Conv1D shard's channels continue on other ranks, so their maxima are
    reduced over the shard's group (exact for a maximum)."""
    w = part.w
    out = torch.where(keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
    if bits is not None:
        reduce = None
        if part.shard is not None and part.out_dim == 1:
            def reduce(amax, group=part.group):
                return S.all_reduce_max(amax, group)
        out = M.fake_quant(out, bits, part.out_dim, reduce)
    return out.detach()


class CalibratedPruner(HardPruner):
    """A one-shot method whose ``prepare`` chooses every keep-mask from calibration data (wanda,
    sparsegpt) into ``_keeps``; attach copies them into the masks, frozen from then on."""

    one_shot = True
    keeps_history = True  # the masks depend on the calibration data, not on the weights alone

    def __init__(self, model: nn.Module, config, targets: list[Target], **kw):
        super().__init__(model, config, targets, **kw)
        self._keeps: dict[str, torch.Tensor] | None = None

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """The keep-masks ``prepare`` chose (at attach, once: the masks are frozen after it)."""
        if self._keeps is None:
            return
        for t in targets:
            self.mask_of(t).keep.copy_(self._keeps[t.name])

    def start(self) -> None:
        super().start()
        self._keeps = None  # now in the masks' buffers
