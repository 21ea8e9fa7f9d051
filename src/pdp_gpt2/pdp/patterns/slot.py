"""Where one tensor holds the units of a coupled structure: a :class:`Slot`.

The units lie along one ``axis`` of the tensor, laid out as ``(outer, units, inner)``: an MLP neuron
is one index of that axis (1, units, 1); an attention head is ``head_dim`` consecutive indices
(1, heads, head_dim); GPT-2's fused c_attn holds the query, key and value thirds one after another,
each with every head (3, heads, head_dim). Splitting the axis that way is a view, so reducing over
everything but the units never copies the tensor (the PDP forward does it every step).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Slot:
    axis: int
    outer: int = 1
    inner: int = 1

    def units(self, x: torch.Tensor) -> int:
        return x.shape[self.axis] // (self.outer * self.inner)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """``x`` viewed with its unit axis split in three, and the dims to reduce over."""
        shape = list(x.shape)
        shape[self.axis:self.axis + 1] = [self.outer, self.units(x), self.inner]
        return x.view(shape), [d for d in range(len(shape)) if d != self.axis + 1]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """One value per unit: the sum of ``x``'s entries at it."""
        v, dims = self._split(x)
        return v.sum(dim=dims)

    def any(self, x: torch.Tensor) -> torch.Tensor:
        """One bool per unit: is any entry of the bool tensor ``x`` at it True?"""
        v, dims = self._split(x)
        return v.amax(dim=dims) if dims else v

    def per_unit(self, x: torch.Tensor) -> int:
        """How many of ``x``'s entries one unit holds."""
        return x.numel() // self.units(x)

    def spread(self, v: torch.Tensor, shape) -> torch.Tensor:
        """``v`` (one value per unit) shaped to broadcast against a tensor of ``shape``."""
        if self.outer * self.inner > 1:
            v = v.view(1, -1, 1).expand(self.outer, -1, self.inner).reshape(-1)
        view = [1] * len(shape)
        view[self.axis] = -1
        return v.view(view)

    def indices(self, kept: torch.Tensor, units: int) -> torch.Tensor:
        """The indices along the axis that the units ``kept`` (sorted unit indices) occupy, in order."""
        block = torch.arange(self.inner, device=kept.device)
        per_outer = (kept.view(-1, 1) * self.inner + block).flatten()
        offsets = torch.arange(self.outer, device=kept.device).view(-1, 1) * units * self.inner
        return (offsets + per_outer).flatten()
