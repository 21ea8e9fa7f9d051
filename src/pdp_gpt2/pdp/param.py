"""The parametrization registered on each target weight.

``torch.nn.utils.parametrize`` makes ``module.weight`` a computed property
(original -> masked), so the model's own forward code is untouched and autograd
sees the mask.  The threshold is cached in a buffer and refreshed by the pruner
once per optimizer step; a forward pass only applies it (gradient accumulation
does not recompute thresholds per micro-batch).
"""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.fused import OutBuffer, soft_masked_weight
from pdp_gpt2.pdp.targets import from_in_last, in_last


class PDPMask(nn.Module):
    def __init__(self, shape: torch.Size, out_dim: int, *, pattern: str, nm, tau: float,
                 tau_mode: str, beta: float | None, bits: int | None):
        super().__init__()
        self.shape, self.out_dim = tuple(shape), out_dim
        self.pattern, self.nm = pattern, nm
        self.tau, self.tau_mode, self.beta, self.bits = tau, tau_mode, beta, bits
        if nm is not None:
            n_groups = shape.numel() // nm[1]
            self.register_buffer("t", torch.zeros(n_groups, 1))
        else:
            self.register_buffer("t", torch.zeros(()))
        # Python-side copy of "is anything pruned?", so forward never syncs with the device.
        self.active = False
        self.sparsity = 0.0  # this tensor's current target sparsity
        # Warm start for the next unstructured threshold (where the last one was);
        # it only speeds the search up, the threshold is exact whatever it holds.
        self._hint: M.Hint | None = None
        self._out = OutBuffer()  # where the masked weight is written, reused across steps

    # ---- scores and thresholds -------------------------------------------------
    def _row_sq(self, w: torch.Tensor) -> torch.Tensor:
        """Squared L2 norm of each output neuron, shaped to broadcast against w."""
        return (w * w).sum(dim=1 - self.out_dim, keepdim=True)

    def _k(self, sparsity: float) -> int:
        if self.nm is not None:
            n, m = self.nm
            # The schedule ramps r from 0 to (M-N)/M: prune floor(r*M) per group, never more than M-N.
            return min(m - n, M.num_pruned(m, sparsity))
        if self.pattern == "row":
            return M.num_pruned(self.shape[self.out_dim], sparsity)
        return M.num_pruned(len_of(self.shape), sparsity)

    @torch.no_grad()
    def refresh(self, w: torch.Tensor, sparsity: float) -> None:
        """Recompute the threshold(s) of weight w at this tensor's sparsity."""
        self.sparsity = float(sparsity)
        k = self._k(sparsity)
        if self.nm is not None:
            t = M.nm_threshold(in_last(w, self.out_dim), k, self.nm[1])
        elif self.pattern == "row":
            t = M.threshold(self._row_sq(w).sqrt(), k)
        else:
            t, self._hint = M.abs_threshold(w, k, self._hint)
        self.t.copy_(t.to(self.t.dtype))
        self.active = k > 0 and bool((self.t > 0).any())

    # ---- forward ---------------------------------------------------------------
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = self._masked(w) if self.active else w
        if self.bits is not None:
            out = M.fake_quant(out, self.bits, self.out_dim)
        return out

    def _masked(self, w: torch.Tensor) -> torch.Tensor:
        t = self.t.to(w.dtype)
        if self.nm is not None:
            m = M.nm_soft_mask(in_last(w, self.out_dim), t, self.nm[1], self.tau,
                               beta=self.beta, tau_mode=self.tau_mode)
            return w * from_in_last(m, self.out_dim)
        if self.pattern == "row":
            m = M.mask_from_gap(M.normalized_gap(self._row_sq(w), t, self.tau_mode), self.tau, self.beta)
            return w * m
        return soft_masked_weight(w, t, self.tau, self.tau_mode, self.beta, buffer=self._out)

    @torch.no_grad()
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """Current soft mask values, broadcast to w's shape (for stats and the optimizer)."""
        if not self.active:
            return torch.ones_like(w)
        t = self.t.to(w.dtype)
        if self.nm is not None:
            m = M.nm_soft_mask(in_last(w, self.out_dim), t, self.nm[1], self.tau,
                               beta=self.beta, tau_mode=self.tau_mode)
            return from_in_last(m, self.out_dim)
        if self.pattern == "row":
            sq = self._row_sq(w)
        else:
            sq = w * w
        return M.mask_from_gap(M.normalized_gap(sq, t, self.tau_mode), self.tau, self.beta).expand_as(w)

    @torch.no_grad()
    def hard_keep(self, w: torch.Tensor) -> torch.Tensor:
        """Boolean keep-mask with exactly this tensor's number of zeros."""
        k = self._k(self.sparsity)
        if self.nm is not None:
            return from_in_last(M.nm_hard_mask(in_last(w, self.out_dim), k, self.nm[1]), self.out_dim)
        if self.pattern == "row":
            keep_rows = M.hard_mask_from_scores(self._row_sq(w).reshape(-1), k)
            shape = [1, 1]
            shape[self.out_dim] = -1
            return keep_rows.view(shape).expand_as(w)
        return M.hard_mask_from_scores(w.abs(), k)

    @torch.no_grad()
    def final_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Dense weight with exact zeros (and on the quantization grid if quantizing)."""
        # where(), not w * keep: a product leaves -0.0 for negative pruned weights, and a
        # checkpoint's bytes should not depend on the signs of weights that are gone.
        out = torch.where(self.hard_keep(w), w, torch.zeros((), dtype=w.dtype, device=w.device))
        if self.bits is not None:
            out = M.fake_quant(out, self.bits, self.out_dim)
        return out.detach()


def len_of(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
