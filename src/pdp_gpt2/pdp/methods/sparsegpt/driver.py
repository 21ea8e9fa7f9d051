"""SparseGPT (Frantar & Alistarh, ICML 2023): one-shot pruning that also *reconstructs* the weights
that stay.

For one layer with inputs X the loss of changing W to W' is ||W X - W' X||^2, with Hessian
H = 2 X X^T / n. Going through the input columns in blocks of ``blocksize`` (128), each pruned
weight's error is spread over the columns not yet visited by the optimal brain surgeon update,
from the upper Cholesky factor of the damped H^-1 (``percdamp``, 1%; the paper's Algorithm 1 and
IST-DASLab/sparsegpt's ``fasterprune``). Each block's mask is chosen by the OBS saliency
w^2 / [H^-1]_ii^2 of the weights as updated so far; N:M chooses each group when the loop reaches it.
Where this departs from the reference (exact per-tensor counts, dead inputs, H per token) and why:
docs/results.md, "How the baselines are implemented".

The driver (:class:`SparseGPT`) runs this layer by layer with the pruned outputs fed forward
(pdp/core/sequential.py), at attach, at the final target, then freezes the mask as a ``HardMask``.
"""
from __future__ import annotations

import math

import torch

from pdp_gpt2.pdp.core.hard import CalibratedPruner
from pdp_gpt2.pdp.core.sequential import visit_sequentially
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels.mask import from_in_last, in_last
from pdp_gpt2.pdp.methods.sparsegpt.config import BLOCKSIZE, PERCDAMP
from pdp_gpt2.pdp.patterns import NM, Unstructured


# ---- pure math ------------------------------------------------------------------------------------

def add_to_hessian(h: torch.Tensor | None, n: int, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Fold inputs ``x`` (..., in) into the running H = 2 X X^T / n over all ``n`` rows seen so far.

    Returns (H, n) updated; ``h`` None starts one (float32, on x's device).  The running mean keeps
    H's entries at the inputs' scale however many rows go in."""
    x = x.reshape(-1, x.shape[-1]).float()
    if h is None:
        h = x.new_zeros(x.shape[1], x.shape[1])
    m = x.shape[0]
    if m == 0:
        return h, n
    h.mul_(n / (n + m))
    n += m
    x = x * math.sqrt(2.0 / n)
    h.addmm_(x.t(), x)
    return h, n


def inverse_hessian_factor(h: torch.Tensor, percdamp: float = PERCDAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): U the upper Cholesky factor of (H + damp I)^-1, float32; dead the inputs with H_ii = 0.

    damp is ``percdamp`` of the mean of the live diagonal (the inputs with H_ii > 0); a dead input's
    H_ii becomes that mean, damped too (H must be positive definite).  Both scale with H, so U
    scales as H^-1/2 and the saliencies' order and the updates do not change (module docstring).
    Computed in float64."""
    hd = h.detach().double().clone()
    diag = hd.diagonal()
    dead = diag == 0
    # every input dead (a layer fed only zeros): any positive scale will do, nothing is coupled
    mean = diag[~dead].mean() if bool((~dead).any()) else diag.new_ones(())
    diag[dead] = mean
    diag += percdamp * mean
    # H^-1 = solve(H, I) through H's Cholesky factor (cholesky_inverse is the same math, but 10x slower on CPU)
    hinv = torch.cholesky_solve(torch.eye(hd.shape[0], dtype=hd.dtype, device=hd.device), torch.linalg.cholesky(hd))
    return torch.linalg.cholesky(hinv, upper=True).to(torch.float32), dead


def block_counts(k: int, columns: int, blocksize: int) -> list[int]:
    """How many of k pruned weights each block of ``blocksize`` columns takes: its share of the
    columns, floor(k c1 / C) - floor(k c0 / C), which add up to exactly k."""
    return [(k * min(c + blocksize, columns)) // columns - (k * c) // columns for c in range(0, columns, blocksize)]


@torch.no_grad()
def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, k: int = 0, *, nm: tuple[int, int] | None = None,
                    blocksize: int = BLOCKSIZE, percdamp: float = PERCDAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune ``w`` (out, in) given its inputs' Hessian ``h`` (in, in): (new weights, keep-mask), float32.

    Unstructured: exactly ``k`` weights pruned, spread over the blocks by :func:`block_counts`.
    ``nm=(p, m)``: exactly p of every group of m consecutive inputs of a row pruned (k is ignored).
    Pruned weights are exactly 0; the kept ones carry the OBS updates (module docstring)."""
    # Worked on as V = W^T (in, out): the loop visits one input at a time, and its weights are a
    # contiguous row of V, so each step is three in-place ops on contiguous memory.
    V = w.detach().to(torch.float32).t().contiguous()
    cols = V.shape[0]
    hinv, dead = inverse_hessian_factor(h.to(V.device), percdamp)
    if nm is not None:
        p, m = nm
        if cols % m:  # checked here, on the whole row: a block's slice would name the wrong dimension
            raise ValueError(f"input dimension {cols} is not divisible by M={m}")
        blocksize = max(m, blocksize // m * m)  # a group never straddles two blocks
    shares = block_counts(k, cols, blocksize) if nm is None else None
    pruned = torch.zeros_like(V, dtype=torch.bool)
    d = hinv.diagonal()

    def saliency(vs: torch.Tensor, c0: int, c1: int) -> torch.Tensor:  # w^2 / [H^-1]_ii^2, 0 where dead
        s = vs * vs / (d[c0:c1] * d[c0:c1]).unsqueeze(1)
        return s.masked_fill(dead[c0:c1].unsqueeze(1), 0.0)

    for b, i1 in enumerate(range(0, cols, blocksize)):
        i2 = min(i1 + blocksize, cols)
        V1, U1, P1 = V[i1:i2], hinv[i1:i2, i1:i2], pruned[i1:i2]  # views: updated in place
        E1 = torch.zeros_like(V1)  # each input's scaled error, for the lazy update of the later blocks
        if nm is None:
            P1.copy_(~M.hard_mask_from_scores(saliency(V1, i1, i2), shares[b]))
        for i in range(i2 - i1):
            if nm is not None and i % m == 0:  # the group starting here, from the weights as updated now
                P1[i:i + m] = ~M.nm_hard_mask(saliency(V1[i:i + m], i1 + i, i1 + i + m).t(), p, m).t()
            e = torch.mul(V1[i], P1[i], out=E1[i]).div_(U1[i, i])  # (w - q) / [U]_ii, q = w with pruned -> 0
            V1[i + 1:].addr_(U1[i, i + 1:], e, alpha=-1)  # the OBS update of the rest of the block
            V1[i].masked_fill_(P1[i], 0.0)  # exactly +0 where pruned (w - e U_ii need not round to 0)
        V[i2:].addmm_(hinv[i1:i2, i2:].t(), E1, alpha=-1)  # the lazy batch update of the inputs after the block
    return V.t(), ~pruned.t()


# ---- the driver -----------------------------------------------------------------------------------

class SparseGPT(CalibratedPruner):
    """One-shot SparseGPT at the final target on the caller's calibration blocks, then frozen."""

    description = ("one-shot SparseGPT (Frantar & Alistarh 2023: masks chosen and the remaining weights "
                   "reconstructed from calibration Hessians, layer by layer), then fine-tuning with the mask frozen")
    # The patterns it takes are its MethodSpec's (unstructured, N:M: its weight updates compensate
    # single weights, not whole neurons); attach refuses the others.

    @classmethod
    def record(cls, config) -> dict:
        count = ("k = floor(r n) per tensor; the block of columns [c0, c1) of C prunes floor(k c1 / C) - "
                 f"floor(k c0 / C), blocks of {config.sparsegpt_blocksize}") if isinstance(config.mask_pattern, Unstructured) else \
            f"the {config.mask_pattern.name!r} pattern's count in every group"
        return {"count": count, "calibration": "sequential: block by block, on the outputs of the blocks already pruned",
                "damping": f"{config.sparsegpt_percdamp:g} of the mean live diagonal of H; a dead input's H_ii = the damped live mean"}

    def prepare(self, calibration) -> None:
        if calibration is None:
            raise ValueError("sparsegpt needs calibration token blocks (attach(..., calibration=blocks))")
        hessians: dict[str, tuple[torch.Tensor | None, int]] = {t.name: (None, 0) for t in self.targets}
        self._keeps = {}
        if self.config.sparsity == 0:  # nothing is pruned: no calibration forward either
            self._keeps = {t.name: torch.ones_like(t.module.weight, dtype=torch.bool) for t in self.targets}
            return

        def observe(t: Target, x: torch.Tensor) -> None:
            hessians[t.name] = add_to_hessian(*hessians[t.name], x)

        def visit(block: list[Target]) -> None:
            for t in block:
                h, _ = hessians.pop(t.name)
                self._keeps[t.name] = self.prune_target(t, h)

        visit_sequentially(self.model, self.targets, calibration, observe, visit, desc="sparsegpt")

    @torch.no_grad()
    def prune_target(self, t: Target, h: torch.Tensor | None) -> torch.Tensor:
        """Prune one plain target weight at its final sparsity from its inputs' Hessian ``h``: the
        reconstructed weights go into the parameter, the keep-mask (the weight's layout) is returned."""
        weight = t.module.weight
        s = self.layer_sparsity(t.name, self.config.sparsity)
        k = self.pattern.num_pruned(weight.shape, t.out_dim, s)
        if k == 0:
            return torch.ones_like(weight, dtype=torch.bool)
        if h is None:
            raise ValueError(f"{t.name} saw no calibration inputs: is it used in the model's forward?")
        nm = (k, self.pattern.m) if isinstance(self.pattern, NM) else None
        w, keep = sparsegpt_prune(in_last(weight.detach(), t.out_dim), h, k, nm=nm,
                                  blocksize=self.config.sparsegpt_blocksize, percdamp=self.config.sparsegpt_percdamp)
        weight.copy_(from_in_last(w, t.out_dim).to(weight.dtype))
        return from_in_last(keep, t.out_dim).contiguous()
