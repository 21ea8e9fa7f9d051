"""The mask-aware optimizer (the original tool's ``custom_optimizer``, wired for real).

Before a standard AdamW step, the gradient of every masked weight is scaled by
(0.1 + 0.9 m), m its current soft mask: weights the mask is switching off move
ten times less, so the optimizer's moments are not spent on weights being
pruned, while a weight near the threshold can still recover.  In the original
tool the masks it read were never filled in, so it was plain AdamW.
"""
from __future__ import annotations

import torch

from pdp_gpt2.pdp.core.driver import MaskDriver

FLOOR = 0.1


class MaskAwareAdamW(torch.optim.AdamW):
    def __init__(self, params, pruner: MaskDriver, **kwargs):
        super().__init__(params, **kwargs)
        self.pruner = pruner

    @torch.no_grad()
    def scale_gradients(self) -> int:
        """Scale masked weights' gradients in place; returns how many tensors were scaled."""
        scaled = 0
        for t in self.pruner.targets:
            w = self.pruner.original(t)
            if w.grad is None:
                continue
            m = self.pruner.mask_of(t).soft_mask(w)
            w.grad.mul_(m * (1 - FLOOR) + FLOOR)
            scaled += 1
        return scaled

    def step(self, closure=None):
        self.scale_gradients()
        return super().step(closure)
