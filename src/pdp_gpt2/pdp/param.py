"""The parametrization registered on each target weight by PDP.

``torch.nn.utils.parametrize`` makes ``module.weight`` a computed property
(original -> masked), so the model's own forward code is untouched and autograd
sees the mask.  The threshold is cached in a buffer and refreshed by the driver
once per optimizer step; a forward pass only applies it (gradient accumulation
does not recompute thresholds per micro-batch).  Everything that depends on the
sparsity pattern is the :class:`~pdp_gpt2.pdp.patterns.Pattern`'s.
"""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.fused import KernelOptions
from pdp_gpt2.pdp.patterns import Pattern

# Where torch.nn.utils.parametrize puts a parametrized weight's parameter and its masks (the
# state_dict key of the dense weight is "<module>.<ORIGINAL>").
ORIGINAL = "parametrizations.weight.original"


class PDPMask(nn.Module):
    def __init__(self, shape: torch.Size, out_dim: int, *, pattern: Pattern, tau: float,
                 tau_mode: str, beta: float | None, bits: int | None, kernels: KernelOptions | None = None):
        super().__init__()
        self.shape, self.out_dim, self.pattern = tuple(shape), out_dim, pattern
        self.tau, self.tau_mode, self.beta, self.bits = tau, tau_mode, beta, bits
        self.kernels = kernels or KernelOptions()
        self.register_buffer("t", torch.zeros(pattern.threshold_shape(self.shape, out_dim)))
        # Python-side copy of "is anything pruned?", so forward never syncs with the device.
        self.active = False
        self.sparsity = 0.0  # this tensor's current target sparsity
        # Warm start for the next threshold (where the last one was); it only speeds the
        # search up, the threshold is exact whatever it holds.
        self._hint = None

    def _k(self, sparsity: float) -> int:
        return self.pattern.num_pruned(self.shape, self.out_dim, sparsity)

    @torch.no_grad()
    def refresh(self, w: torch.Tensor, sparsity: float) -> None:
        """Recompute the threshold(s) of weight w at this tensor's sparsity."""
        self.sparsity = float(sparsity)
        k = self._k(sparsity)
        t, self._hint = self.pattern.threshold(w, self.out_dim, k, self._hint, self.kernels)
        self.t.copy_(t.to(self.t.dtype))
        self.active = k > 0 and bool((self.t > 0).any())

    # ---- forward ---------------------------------------------------------------
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self._output(w, self.active, self.t, self.tau)

    def _output(self, w: torch.Tensor, active: bool, t: torch.Tensor, tau: float) -> torch.Tensor:
        out = self.pattern.masked_weight(w, self.out_dim, t.to(w.dtype), tau, self.tau_mode, self.beta,
                                         self.kernels) if active else w
        if self.bits is not None:
            out = M.fake_quant(out, self.bits, self.out_dim)
        return out

    def recipe(self, w: torch.Tensor):
        """A function that recomputes this forward's output for ``w`` later, with the state
        the mask has now (threshold, tau), for the backward (pdp/recompute.py)."""
        active, t, tau = self.active, self.t.clone(), self.tau
        return lambda: self._output(w, active, t, tau)

    @torch.no_grad()
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """Current soft mask values, broadcast to w's shape (for stats and the optimizer)."""
        if not self.active:
            return torch.ones_like(w)
        m = self.pattern.soft_mask(w, self.out_dim, self.t.to(w.dtype), self.tau, self.tau_mode, self.beta)
        return m.expand_as(w)

    @torch.no_grad()
    def hard_keep(self, w: torch.Tensor) -> torch.Tensor:
        """Boolean keep-mask with exactly this tensor's number of zeros."""
        return self.pattern.keep(w.abs(), self.out_dim, self._k(self.sparsity))

    @torch.no_grad()
    def final_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Dense weight with exact zeros (and on the quantization grid if quantizing)."""
        # where(), not w * keep: a product leaves -0.0 for negative pruned weights, and a
        # checkpoint's bytes should not depend on the signs of weights that are gone.
        out = torch.where(self.hard_keep(w), w, torch.zeros((), dtype=w.dtype, device=w.device))
        if self.bits is not None:
            out = M.fake_quant(out, self.bits, self.out_dim)
        return out.detach()
