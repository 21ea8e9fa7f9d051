"""Pure PDP math: thresholds, soft masks, hard masks, fake quantization.

Nothing here knows about modules or models; every function takes tensors and
returns tensors, so each one is tested on hand-computed values.

Notation (Cho, Adya, Naik, "PDP: Parameter-free Differentiable Pruning is All
You Need", NeurIPS 2023): for a weight tensor W with n entries and a target
sparsity r, the k = floor(r * n) entries of smallest magnitude are "pruned".

* threshold t = midpoint between the largest pruned |w| and the smallest kept |w|
  (it is a number read off the weights: it carries no gradient);
* soft mask  m(w) = softmax([t^2, w^2] / tau)[1] = sigmoid((w^2 - t^2) / tau);
* effective weight m(w) * w, with the gradient flowing through m as well
  (the paper's boosting term dm/dw = 2 w m (1 - m) / tau).

tau convention (the one place we depart from a raw reading of the paper, and why):
an absolute tau on w^2 means different things on different layers, because
GPT-2's layers differ ~10x in weight scale (so ~100x in w^2): one value would be
a hard step on one layer and "everything 0.5" on another.  We measure w^2 - t^2
in units of t^2, i.e. x = (w^2 - t^2) / t^2 = (|w| / t)^2 - 1, and use
m = sigmoid(x / tau).  The mask then depends only on |w| / t: it is invariant
to the layer's scale, and tau is dimensionless.  With the default tau = 0.02 the
band 0.05 < m < 0.95 is |w| / t in [0.970, 1.029] on every layer.
Pass ``tau_mode="absolute"`` to get the paper's raw form x = w^2 - t^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

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


# ---- exact selection without a fresh full selection -----------------------------------
# threshold() above is the definition.  Training recomputes it for every target
# tensor after every optimizer step, and a fresh selection (kthvalue copies the
# tensor and runs a single-threaded nth_element) cost more there than the masked
# forward and backward together.  Weights move little per step, so the k-th
# smallest |w| moves little: abs_threshold() guesses an interval [lo, hi] around
# it, counts in one fused pass how many |w| lie below lo and inside [lo, hi]
# (per block of fused.BLOCK entries), and when the counts show that the k-th and
# (k+1)-th smallest both lie inside, sorts just the entries of the few blocks that
# hold candidates.  The counts prove the bracket, so the result is exactly
# threshold(w.abs(), k), ties included; a bad guess costs another counting pass,
# and after a few the definition runs.

FAST_MIN_NUMEL = 1 << 14  # below this the definition is as fast
_TRIES = 4
_SAMPLE = 4096  # entries in the strided sample that makes a first guess
_MIN_CANDIDATES = 64  # aim for at least this many entries inside a bracket


@dataclass
class Hint:
    """What one selection on a tensor tells the next one (a warm start; never affects the result)."""

    k: int
    value: float  # the k-th smallest |w| found
    density: float  # entries of |w| per unit of magnitude near it (0: unknown)
    miss: float  # |value - guess|: how far it was from where we looked


def abs_threshold(w: torch.Tensor, k: int, hint: Hint | None = None,
                  kernels=None) -> tuple[torch.Tensor, Hint | None]:
    """``threshold(w.abs(), k)``, bit for bit, and a hint for the next call on this tensor.

    ``hint`` (from the previous call on the same, slightly changed tensor) only
    decides where to look; any hint, stale or wrong, gives the same threshold.
    ``kernels``: the fused.KernelOptions of the counting pass.
    """
    flat = w.detach().reshape(-1)
    n = flat.numel()
    if k <= 0 or k >= n or n < FAST_MIN_NUMEL:
        return threshold(flat.abs(), k), None
    center, half, density = _first_guess(flat, k) if hint is None else _guess_from(hint, k)
    guess = center
    for _ in range(_TRIES):
        lo, hi = max(center - half, 0.0), center + half
        pair, below, inside = _select_in(flat, k, lo, hi, kernels)
        if inside >= 2 and hi > lo:
            density = inside / (hi - lo)
        if pair is not None:
            v_k, v_k1 = pair
            value = float(v_k)
            # a sample's guess misses by its sampling error, not by how the weights drift
            miss = abs(value - guess) if hint is not None else 0.0
            return (v_k + v_k1) / 2, Hint(k, value, density, miss)
        # the counts say which side the k-th smallest is on, and (density) about how far
        if below >= k:
            shift = (below - k + 1) / density if density > 0 else 2 * half
            center, half = lo - shift, max(2 * half, shift)
        else:
            shift = (k + 1 - below - inside) / density if density > 0 else 2 * half
            center, half = hi + shift, max(2 * half, shift)
    return threshold(flat.abs(), k), None


def _first_guess(flat: torch.Tensor, k: int) -> tuple[float, float, float]:
    """Center and half-width from a strided sample: its quantile at k/n, +- 4 standard errors."""
    n = flat.numel()
    sample = flat[:: max(1, n // _SAMPLE)].abs().float()
    m = sample.numel()
    q = k / n
    se = max(1.0, math.sqrt(m * q * (1 - q)))  # standard error of the sample rank
    r = min(m, max(1, round(q * m)))
    r_lo, r_hi = max(1, r - math.ceil(4 * se)), min(m, r + math.ceil(4 * se))
    v = [float(sample.kthvalue(i).values) for i in (r_lo, r, r_hi)]
    center, half = v[1], max(v[1] - v[0], v[2] - v[1])
    density = (r_hi - r_lo) * (n / m) / (v[2] - v[0]) if v[2] > v[0] else 0.0
    if half <= 0:  # a sample of ties: look just around them
        half = abs(center) * 1e-3 + 1e-30
    return center, half, density


def _guess_from(h: Hint, k: int) -> tuple[float, float, float]:
    """Center and half-width for k from the last selection: shift by the rank change, allow for drift."""
    if h.density > 0:
        center = h.value + (k - h.k) / h.density
        half = max(3 * h.miss, _MIN_CANDIDATES / (2 * h.density), 0.25 * abs(k - h.k) / h.density)
    else:
        center, half = h.value, max(3 * h.miss, abs(h.value) * 1e-3)
    return center, max(half, abs(center) * 1e-7, 1e-30), h.density


def bracket_counts(flat: torch.Tensor, lo: float, hi: float, kernels=None):
    """How many |x| of ``flat`` lie below ``lo`` and inside [lo, hi]: the one exact count
    threshold selection needs, in one pass and one host sync.

    Returns (below, inside, inside_per_block, body, tail): the two totals as ints, and
    what :func:`_select_in` needs to collect the candidates (per-block counts of the
    first ``len(body)`` entries, blocks of fused.BLOCK; ``tail`` = the rest, as |x|).
    """
    from pdp_gpt2.pdp.fused import BLOCK, block_counts

    lo_t = torch.tensor(lo, dtype=flat.dtype, device=flat.device)
    hi_t = torch.tensor(hi, dtype=flat.dtype, device=flat.device)
    n_body = flat.numel() - flat.numel() % BLOCK
    body, tail = flat[:n_body], flat[n_body:].abs()
    below_b, inside_b = block_counts(body, lo_t, hi_t, kernels)
    tail_in = (tail >= lo_t) & (tail <= hi_t)
    # one host sync for both counts; float64 sums of whole numbers are exact
    below, inside = torch.stack([below_b.sum(dtype=torch.float64) + (tail < lo_t).sum(),
                                 inside_b.sum(dtype=torch.float64) + tail_in.sum()]).tolist()
    return int(below), int(inside), inside_b, body, tail


def _select_in(flat: torch.Tensor, k: int, lo: float, hi: float, kernels=None):
    """(k-th, (k+1)-th smallest |x|) if both lie in [lo, hi], else None; plus the two counts.

    Returns (pair or None, #(|x| < lo), #(lo <= |x| <= hi)).
    """
    from pdp_gpt2.pdp.fused import BLOCK

    below, inside, inside_b, body, tail = bracket_counts(flat, lo, hi, kernels)
    if not (below <= k - 1 and below + inside >= k + 1):
        return None, below, inside
    lo_t = torch.tensor(lo, dtype=flat.dtype, device=flat.device)
    hi_t = torch.tensor(hi, dtype=flat.dtype, device=flat.device)
    blocks = inside_b.nonzero().squeeze(1)
    vals = torch.cat([body.view(-1, BLOCK).index_select(0, blocks).abs().reshape(-1), tail])
    cand = vals[(vals >= lo_t) & (vals <= hi_t)].sort().values
    assert cand.numel() == inside, "block counts disagree with the entries they count"
    j = k - below  # rank of the k-th smallest among the candidates (1-based)
    return (cand[j - 1], cand[j]), below, inside


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


def mask_from_gap(x: torch.Tensor, tau: float, beta: float | None = None) -> torch.Tensor:
    """Soft mask from the normalized gap x.

    Standard PDP: sigmoid(x / tau).  With ``beta`` (the original tool's
    "improved masking"): 0.7 * sigmoid(x / tau) + 0.3 * (tanh(beta * x / tau) + 1) / 2,
    a blend whose tanh part is steeper than the sigmoid for beta > 0.5, so the
    mask commits faster far from the threshold while staying smooth at it.
    """
    z = x / tau
    m = torch.sigmoid(z)
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


def quant_scale(w: torch.Tensor, bits: int, out_dim: int) -> torch.Tensor:
    """Symmetric per-output-channel scale max|w| / (2^(b-1) - 1), broadcastable to w."""
    qmax = 2 ** (bits - 1) - 1
    reduce = [d for d in range(w.dim()) if d != out_dim % w.dim()]
    amax = w.detach().abs().amax(dim=reduce, keepdim=True)
    return torch.where(amax > 0, amax / qmax, torch.ones_like(amax))


def fake_quant(w: torch.Tensor, bits: int, out_dim: int) -> torch.Tensor:
    """Round w to its channel's symmetric b-bit grid, straight-through in backward.

    Forward returns round(w / s) * s (zeros stay exactly zero); backward treats
    the rounding as identity, so the mask and the weights still get gradients.
    """
    qmax = 2 ** (bits - 1) - 1
    s = quant_scale(w, bits, out_dim)
    q = torch.clamp(torch.round(w / s), -qmax, qmax) * s
    return w + (q - w).detach()
