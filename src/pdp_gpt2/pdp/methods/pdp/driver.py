"""PDP's driver: a :class:`~pdp_gpt2.pdp.methods.pdp.mask.PDPMask` on every target, every
threshold refreshed in one batched selection after each step, and the tau schedule's setter."""
from __future__ import annotations

from torch import nn

from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.methods.pdp.mask import PDPMask

class Pruner(MaskDriver):
    """PDP: soft masks from each weight's own magnitude, thresholds refreshed after every step."""

    description = ("Parameter-free Differentiable Pruning (PDP; Cho, Adya, Naik, NeurIPS 2023, arXiv:2305.11203) "
                   "while fine-tuning: soft masks from each weight's magnitude, sparsity on a schedule, "
                   "exact zeros at the end")

    def make_mask(self, t: Target) -> nn.Module:
        c = self.config
        return PDPMask(t.module.weight.shape, t.out_dim, pattern=self.pattern, tau=c.tau, tau_mode=c.tau_mode,
                       beta=c.beta if c.improved_masking else None, bits=c.bits if c.quantize else None,
                       kernels=self.kernels)

    def update(self, t: Target, sparsity: float) -> None:
        self.update_all([t], [sparsity])

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """Every target's threshold in one batched selection (pdp/kernels/select.py: one host transfer in a
        steady state, however many targets; the same code on shards)."""
        masks = [self.mask_of(t) for t in targets]
        ks = [m._k(s) for m, s in zip(masks, sparsities)]
        ts, hints, positive = self.pattern.thresholds([self.part(t) for t in targets], ks,
                                                      [m._hint for m in masks], self.kernels)
        for m, s, t, h, pos in zip(masks, sparsities, ts, hints, positive):
            m.set_threshold(s, t, h, pos)

    def set_tau(self, tau: float) -> None:
        """Soft-mask temperature of every target (the tau schedule calls this).  Each mask reads
        its ``tau`` at every forward; thresholds do not depend on it, so nothing is recomputed."""
        if not (0.0 < tau < float("inf")):
            raise ValueError(f"tau must be finite and > 0, got {tau}")
        for t in self.targets:
            self.mask_of(t).tau = float(tau)
