"""Pure PDP math: thresholds, soft masks, hard masks, fake quantization; tensors in, tensors out,
so each function is tested on hand-computed values.

For a weight tensor W with n entries at target sparsity r (Cho, Adya, Naik, NeurIPS 2023), the
k = floor(r n) smallest magnitudes are pruned; the threshold t is the midpoint between the largest
pruned |w| and the smallest kept |w| (no gradient); the soft mask is
m(w) = softmax([t^2, w^2] / tau)[1] and the effective weight m(w) * w, with the gradient through m.
We measure w^2 - t^2 in units of t^2, m = sigmoid(((|w| / t)^2 - 1) / tau), because GPT-2's layers
differ ~10x in weight scale: the mask then depends only on |w| / t and one tau means the same on
every layer. ``tau_mode="absolute"`` gives the paper's raw form (docs/method.md).
"""
from __future__ import annotations

import math

import torch

# Entries whose soft mask lies strictly inside this interval are "in the band":
# they are neither clearly kept nor clearly pruned.  Reported per layer.
BAND = (0.05, 0.95)


def num_pruned(n: int, sparsity: float) -> int:
    """k = floor(r * n), guarded against float noise (0.9 * 10 must give 9, not 8)."""
    return min(n, int(math.floor(sparsity * n + 1e-9)))


def threshold(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Midpoint between the k-th and (k+1)-th smallest of ``scores`` (flattened).

    ``scores`` are magnitudes (|w|, or row norms).  Returns a 0-d tensor in
    ``scores``' dtype, detached.  k = 0 gives 0 (nothing pruned) and k = n gives
    the largest score (everything pruned).
    """
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k <= 0:
        return flat.new_zeros(())
    if k >= n:
        return flat.max()
    lo = flat.kthvalue(k).values  # largest pruned
    # smallest kept = the (k+1)-th smallest.  With ties at `lo` it equals `lo`;
    # otherwise it is the smallest value strictly above `lo`.
    if int((flat <= lo).sum()) > k:
        hi = lo
    else:
        hi = flat[flat > lo].min()
    return (lo + hi) / 2


# Training does not call threshold() per tensor: pdp/kernels/select.py finds the same values, bit for bit,
# for every target at once with the counting on the device (this function is the definition its
# tests compare against).


def normalized_gap(sq: torch.Tensor, t: torch.Tensor, tau_mode: str = "relative") -> torch.Tensor:
    """x = (s^2 - t^2) / t^2 ("relative", default) or s^2 - t^2 ("absolute").

    ``sq`` is the squared score (w^2 or squared row norm); ``t`` the threshold on
    the unsquared score.
    """
    t2 = t * t
    if tau_mode == "relative":
        return sq / t2 - 1.0
    if tau_mode == "absolute":
        return sq - t2
    raise ValueError(f"unknown tau_mode {tau_mode!r}")


# Below this z = x / tau the sigmoid is taken as exactly 0 (its value would be under e^-64 ~ 1.6e-28).
# Saturated masks must hold exact zeros, not subnormal numbers: a sigmoid below ~e^-87, or a masked
# weight w * m below float32's normal range (1.2e-38), makes every op that reads it run on the CPU's
# slow path (15-20x slower steps while tau anneals). w * m changes by under 1.6e-28 |w|, and the
# gradients it drops are under fused.underflow_level's flush for any upstream gradient below ~1e8;
# a whole run still rounds differently in its last digits (tests/pdp/test_subnormal.py).
Z_FLOOR = -64.0


def saturated_sigmoid(z: torch.Tensor) -> torch.Tensor:
    """sigmoid(z), exactly 0 (value and slope) where z < Z_FLOOR; never a subnormal number."""
    return torch.where(z < Z_FLOOR, 0.0, torch.sigmoid(z.clamp_min(Z_FLOOR)))


def mask_from_gap(x: torch.Tensor, tau: float, beta: float | None = None) -> torch.Tensor:
    """Soft mask from the normalized gap x.

    Standard PDP: sigmoid(x / tau).  With ``beta`` (the original tool's
    "improved masking"): 0.7 * sigmoid(x / tau) + 0.3 * (tanh(beta * x / tau) + 1) / 2,
    a blend whose tanh part is steeper than the sigmoid for beta > 0.5, so the
    mask commits faster far from the threshold while staying smooth at it.
    """
    z = x / tau
    m = saturated_sigmoid(z)
    if beta is not None:
        m = 0.7 * m + 0.15 * (torch.tanh(beta * z) + 1.0)
    return m


def soft_mask(
    weight: torch.Tensor,
    sparsity: float,
    tau: float,
    *,
    beta: float | None = None,
    tau_mode: str = "relative",
    t: torch.Tensor | None = None,
) -> torch.Tensor:
    """The unstructured PDP mask of ``weight`` at ``sparsity`` (differentiable in weight).

    The threshold is read off |weight| (no gradient) unless ``t`` is given, which
    is how the model uses it: thresholds are refreshed once per optimizer step,
    not on every forward.  Sparsity 0 gives a mask of exact ones.
    """
    if t is None:
        k = num_pruned(weight.numel(), sparsity)
        if k == 0:
            return torch.ones_like(weight)
        t = threshold(weight.abs(), k)
    if float(t) == 0.0:  # nothing to prune (r = 0, or all pruned weights are exactly 0)
        return torch.ones_like(weight)
    return mask_from_gap(normalized_gap(weight * weight, t, tau_mode), tau, beta)


def hard_mask_from_scores(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean keep-mask with exactly k False entries: the k smallest scores.

    Ties are broken deterministically by flat index (a stable sort), so the
    count is exact even when many weights share a magnitude (e.g. zeros).
    """
    flat = scores.detach().reshape(-1)
    n = flat.numel()
    if k <= 0:
        return torch.ones_like(flat, dtype=torch.bool).view_as(scores)
    if k >= n:
        return torch.zeros_like(flat, dtype=torch.bool).view_as(scores)
    # Same result as pruning the first k of a stable sort, without sorting (a full sort of
    # every tensor after every step made gradual magnitude pruning cost 2x a dense step on
    # GPT-2 small): everything below the k-th smallest value v goes, and of the entries
    # equal to v, the lowest-index ones until k are gone.
    v = flat.kthvalue(k).values
    if torch.isnan(v):  # pruning into the NaNs (a sort puts them last): rare, take the definition
        keep = torch.ones_like(flat, dtype=torch.bool)
        keep[torch.sort(flat, stable=True).indices[:k]] = False
        return keep.view_as(scores)
    keep = ~(flat <= v)  # not flat > v: a NaN is kept, as a sort puts it last
    ties = (flat == v).nonzero().squeeze(1)  # ascending flat index
    n_below = n - int(keep.sum()) - ties.numel()
    keep[ties[k - n_below:]] = True
    return keep.view_as(scores)


def hard_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep |w| > t: exactly floor(r * n) zeros per tensor (boolean keep-mask)."""
    return hard_mask_from_scores(weight.abs(), num_pruned(weight.numel(), sparsity))


# ---- N:M -------------------------------------------------------------------------
# Groups are M consecutive weights along the *input* dimension.  Callers pass the
# weight with the input dimension last (Linear stores (out, in): as is; Conv1D
# stores (in, out): transpose), so groups are simply the last dim viewed as (-1, M).


def _groups(w_in_last: torch.Tensor, m: int) -> torch.Tensor:
    if w_in_last.shape[-1] % m:
        raise ValueError(f"input dimension {w_in_last.shape[-1]} is not divisible by M={m}")
    return w_in_last.reshape(-1, m)


def nm_threshold(w_in_last: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Per-group thresholds (shape (groups, 1)): midpoint of the k-th and (k+1)-th smallest |w|."""
    g = _groups(w_in_last.detach().abs(), m)
    if k <= 0:
        return g.new_zeros(g.shape[0], 1)
    s = g.sort(dim=1).values
    return ((s[:, k - 1] + s[:, k]) / 2).unsqueeze(1) if k < m else s[:, -1:]


def nm_soft_mask(
    w_in_last: torch.Tensor, t: torch.Tensor, m: int, tau: float, *, beta=None, tau_mode="relative"
) -> torch.Tensor:
    """Soft mask with one threshold per group of M (same shape as ``w_in_last``)."""
    g = _groups(w_in_last, m)
    safe_t = torch.where(t > 0, t, torch.ones_like(t))  # groups with t = 0 prune nothing
    mask = mask_from_gap(normalized_gap(g * g, safe_t, tau_mode), tau, beta)
    mask = torch.where(t > 0, mask, torch.ones_like(mask))
    return mask.reshape(w_in_last.shape)


def nm_hard_mask(w_in_last: torch.Tensor, k: int, m: int) -> torch.Tensor:
    """Keep-mask pruning exactly the k smallest |w| of every group of M (stable ties)."""
    g = _groups(w_in_last.detach().abs(), m)
    keep = torch.ones_like(g, dtype=torch.bool)
    if k > 0:
        idx = torch.sort(g, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, idx, False)
    return keep.reshape(w_in_last.shape)


# ---- fake quantization -------------------------------------------------------------


def quant_scale(w: torch.Tensor, bits: int, out_dim: int, amax_reduce=None) -> torch.Tensor:
    """Symmetric per-output-channel scale max|w| / (2^(b-1) - 1), broadcastable to w.

    ``amax_reduce``: a function that turns this tensor's per-channel maxima into the whole
    weight's, for a shard whose channels continue on other ranks (a maximum over shards is exact).
    """
    qmax = 2 ** (bits - 1) - 1
    reduce = [d for d in range(w.dim()) if d != out_dim % w.dim()]
    if w.numel():
        amax = w.detach().abs().amax(dim=reduce, keepdim=True)
    else:  # an empty shard: its channels' maxima are the other ranks'
        amax = w.new_zeros([1 if d in reduce else s for d, s in enumerate(w.shape)])
    if amax_reduce is not None:
        amax = amax_reduce(amax.contiguous())
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def fake_quant(w: torch.Tensor, bits: int, out_dim: int, amax_reduce=None) -> torch.Tensor:
    """Round w to its channel's symmetric b-bit grid, straight-through in backward.

    Forward returns round(w / s) * s (zeros stay exactly zero); backward treats
    the rounding as identity, so the mask and the weights still get gradients.
    """
    qmax = 2 ** (bits - 1) - 1
    s = quant_scale(w, bits, out_dim, amax_reduce)
    q = torch.clamp(torch.round(w / s), -qmax, qmax) * s
    return w + (q - w).detach()


def in_last(w: torch.Tensor, out_dim: int) -> torch.Tensor:
    """View of w as (out, in), so groups along the input dimension are the last axis."""
    return w if out_dim == 0 else w.t()


def from_in_last(x: torch.Tensor, out_dim: int) -> torch.Tensor:
    """Inverse of :func:`in_last`."""
    return x if out_dim == 0 else x.t()
