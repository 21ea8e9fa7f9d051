"""PDP's driver: a :class:`~pdp_gpt2.pdp.methods.pdp.mask.PDPMask` on every target, every
threshold refreshed in one batched selection after each step, and the tau schedule's setter."""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.methods.pdp.mask import PDPMask

class Pruner(MaskDriver):
    """PDP: soft masks from each weight's own magnitude, thresholds refreshed after every step."""

    description = ("Parameter-free Differentiable Pruning (PDP; Cho, Adya, Naik, NeurIPS 2023, arXiv:2305.11203) "
                   "while fine-tuning: soft masks from each weight's magnitude, sparsity on a schedule, "
                   "exact zeros at the end")

    def __init__(self, model, config, targets, *, kernels=None):
        super().__init__(model, config, targets, kernels=kernels)
        # Per group: the units its mask prunes now, and a warm start for its next threshold (where the
        # last one was, on the device: it only speeds the search up).
        self._ks: dict[str, int] = {}
        self._hints: dict = {}

    def make_mask(self, t: Target) -> nn.Module:
        c = self.config
        return PDPMask(t.module.weight.shape, t.out_dim, pattern=self.pattern, tau=c.tau, tau_mode=c.tau_mode,
                       beta=c.beta if c.improved_masking else None, bits=c.bits if c.quantize else None,
                       kernels=self.kernels, unit=self._unit_of(t))

    def _unit_of(self, t: Target):
        """(the structure's live pools, t's unit slot) when t is a coupled pattern's member, else None."""
        for g in self.groups:
            for m in g.members:
                if g.coupled and m.target is t:
                    return (lambda live, g=g: self.pools(g, live)), m.slot
        return None

    def update(self, t: Target, sparsity: float) -> None:
        self.update_all([t], [sparsity])

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """Every group's threshold in one batched selection (pdp/kernels/select.py: one host transfer in a
        steady state, however many targets; the same code on shards)."""
        groups, sparsities = self.groups_of(targets, sparsities)
        parts = [self.group_part(g) for g in groups]
        ks = [self.pattern.num_pruned(p.shape, p.out_dim, s) for p, s in zip(parts, sparsities)]
        ts, hints, positive = self.pattern.thresholds(parts, ks, [self._hints.get(g.name) for g in groups],
                                                      self.kernels)
        for g, k, t, h, pos in zip(groups, ks, ts, hints, positive):
            self._ks[g.name], self._hints[g.name] = k, h
            for m in g.members:
                self.mask_of(m.target).set_threshold(t, k > 0 and pos)

    @torch.no_grad()
    def final_keeps(self) -> dict[str, torch.Tensor]:
        """Keep-masks with exactly each group's current number of pruned units (ties by index)."""
        parts = [self.group_part(g) for g in self.groups]
        keeps = self.pattern.keeps(parts, [self._ks.get(g.name, 0) for g in self.groups], self.kernels)
        out = {}
        for g, keep in zip(self.groups, keeps):
            out.update(zip((m.target.name for m in g.members), self.member_keeps(g, keep)))
        return out

    def set_tau(self, tau: float) -> None:
        """Soft-mask temperature of every target (the tau schedule calls this).  Each mask reads
        its ``tau`` at every forward; thresholds do not depend on it, so nothing is recomputed."""
        if not (0.0 < tau < float("inf")):
            raise ValueError(f"tau must be finite and > 0, got {tau}")
        for t in self.targets:
            self.mask_of(t).tau = float(tau)
