"""Memory-lean autograd for the unstructured PDP weight w * m(w).

Plain autograd of ``w * sigmoid((w^2 * a - b) / tau)`` keeps several full-size
intermediates alive until backward (w^2, z, m, ...).  This Function saves only
``w`` (which the parameter holds anyway) and recomputes m in backward, using

    d(w m)/dw = m + w * dm/dz * dz/dw = m + (2 a / tau) * w^2 * dm/dz,

with dm/dz = m (1 - m) for the sigmoid and, for the improved (beta) blend,
0.7 s (1 - s) + 0.15 beta (1 - tanh(beta z)^2).  The math is the same as
:func:`pdp_gpt2.pdp.mask.soft_mask`; tests check both value and gradient.

a, b are 0-d tensors: (1/t^2, 1) in relative mode, (1, t^2) in absolute mode,
so z = (w^2 a - b) / tau covers both without a host sync.
"""
from __future__ import annotations

import torch


def _mask_and_slope(w, a, b, tau: float, beta: float | None):
    z = (w * w * a - b) / tau
    s = torch.sigmoid(z)
    if beta is None:
        return s, s * (1 - s)
    th = torch.tanh(beta * z)
    return 0.7 * s + 0.15 * (th + 1), 0.7 * s * (1 - s) + 0.15 * beta * (1 - th * th)


class SoftMaskedWeight(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, a, b, tau: float, beta):
        with torch.no_grad():
            z = (w * w).mul_(a).sub_(b).div_(tau)
            if beta is None:
                m = z.sigmoid_()
            else:
                th = torch.tanh(z * beta)
                m = z.sigmoid_().mul_(0.7).add_(th.add_(1).mul_(0.15))
            out = m.mul_(w)
        ctx.save_for_backward(w, a, b)
        ctx.tau, ctx.beta = tau, beta
        return out

    @staticmethod
    def backward(ctx, grad):
        w, a, b = ctx.saved_tensors
        m, slope = _mask_and_slope(w, a, b, ctx.tau, ctx.beta)
        # m + (2a/tau) w^2 slope, built in place on `slope` to keep one extra buffer
        local = slope.mul_(w).mul_(w).mul_(a * (2.0 / ctx.tau)).add_(m)
        return grad * local, None, None, None, None


def soft_masked_weight(w, t, tau: float, tau_mode: str, beta: float | None):
    """w * m(w) for a cached threshold t (0-d tensor), memory-lean."""
    t2 = t * t
    if tau_mode == "relative":
        a, b = 1.0 / t2, torch.ones_like(t2)
    else:
        a, b = torch.ones_like(t2), t2
    return SoftMaskedWeight.apply(w, a.to(w.dtype), b.to(w.dtype), tau, beta)
