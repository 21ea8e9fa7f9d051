"""The parametrization registered on each target weight by PDP.

``torch.nn.utils.parametrize`` makes ``module.weight`` a computed property (original -> masked), so
the model's own forward code is untouched and autograd sees the mask. The threshold is a buffer
the driver refreshes once per optimizer step for every target together; a forward only applies it
(so gradient accumulation does not recompute thresholds per micro-batch). What depends on the
pattern is the :class:`~pdp_gpt2.pdp.patterns.Pattern`'s, what depends on a shard the
:class:`~pdp_gpt2.pdp.patterns.Part`'s. A mask tells its driver ``soft``,
``local_soft_mask``, ``final_local`` (finalize's exact zeros, written as +0.0) and ``to_identity``;
the driver keeps the counts and chooses finalize's keep-masks (the units of a coupled pattern span
several masks).
"""
from __future__ import annotations

import torch

from pdp_gpt2.names import ORIGINAL  # noqa: F401  (where parametrize keeps the dense weight; re-exported)
from pdp_gpt2.pdp.core.hard import final_values
from pdp_gpt2.pdp.core.mask import Mask
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.pdp.patterns import Part, Pattern


class PDPMask(Mask):
    soft = True
    recomputable = True

    def __init__(self, shape: torch.Size, out_dim: int, *, pattern: Pattern, tau: float,
                 tau_mode: str, beta: float | None, bits: int | None, kernels: KernelOptions | None = None,
                 unit: tuple | None = None):
        super().__init__()
        self.shape, self.out_dim, self.pattern = tuple(shape), out_dim, pattern
        self.tau, self.tau_mode, self.beta, self.bits = tau, tau_mode, beta, bits
        self.kernels = kernels or KernelOptions()
        # A coupled pattern's member: (a function giving the structure's live pools, where this weight
        # holds the units); the mask is then the units' soft mask from every member (pdp/patterns/coupled.py).
        self.unit = unit
        self.register_buffer("t", torch.zeros(pattern.threshold_shape(self.shape, out_dim)))
        # Python-side copy of "is anything pruned?", so forward never syncs with the device.
        self.active = False

    def set_threshold(self, t: torch.Tensor, active: bool) -> None:
        """Take the threshold the driver selected (for every target at once); ``active``: anything is pruned."""
        self.t.copy_(t.to(self.t.dtype))
        self.active = active

    # ---- forward ---------------------------------------------------------------
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self._output(w, self.active, self.t, self.tau)

    def _output(self, w: torch.Tensor, active: bool, t: torch.Tensor, tau: float) -> torch.Tensor:
        if not active:
            out = w
        elif self.unit is not None:
            out = w * self._unit_mask(self.unit[0](True), w.shape, t, tau)
        else:
            out = self.pattern.masked_weight(w, self.out_dim, t.to(w.dtype), tau, self.tau_mode, self.beta,
                                             self.kernels)
        if self.bits is not None:
            out = M.fake_quant(out, self.bits, self.out_dim)
        return out

    def recipe(self, w: torch.Tensor):
        """A function that recomputes this forward's output for ``w`` later, with the state
        the mask has now (threshold, tau), for the backward (pdp/kernels/recompute.py)."""
        active, t, tau = self.active, self.t.clone(), self.tau
        return lambda: self._output(w, active, t, tau)

    @torch.no_grad()
    def soft_mask(self, w: torch.Tensor) -> torch.Tensor:
        """Current soft mask values, broadcast to w's shape (for stats and the optimizer)."""
        return self.local_soft_mask(Part(w, self.out_dim))

    def _unit_mask(self, pools, shape, t, tau) -> torch.Tensor:
        sq = self.pattern.unit_sq(pools)
        return self.pattern.member_mask(sq, shape, self.unit[1], t, tau, self.tau_mode, self.beta)

    @torch.no_grad()
    def local_soft_mask(self, part: Part) -> torch.Tensor:
        """The soft mask's values on the rows ``part`` holds."""
        if not self.active:
            return torch.ones_like(part.w)
        if self.unit is not None:
            return self._unit_mask(self.unit[0](False), part.w.shape, self.t, self.tau).expand_as(part.w)
        return self.pattern.local_soft_mask(part, self.t, self.tau, self.tau_mode, self.beta).expand_as(part.w)

    # ---- finalize ----------------------------------------------------------------
    @torch.no_grad()
    def final_local(self, part: Part, keep: torch.Tensor) -> torch.Tensor:
        return final_values(part, keep, self.bits)

    def to_identity(self) -> None:
        """Mask nothing from now on (a finalized or removed sharded model keeps its parametrizations)."""
        self.active, self.bits = False, None
