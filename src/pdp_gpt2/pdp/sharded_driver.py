"""The mask drivers on sharded weights: what ``MaskDriver.refresh``, ``finalize`` and ``stats``
do when FSDP2 has made the target weights DTensors (pdp/driver.py calls these), built on the
exact selection of pdp/sharded.py.

Masks are attached before the model is sharded, so every mask buffer (PDP's thresholds, the
baselines' keep-masks) is whole on every rank and is updated to the same bits everywhere.  A
pattern (patterns.py) is recognised by duck type so nothing here imports a driver:
'unstructured', 'row', or N:M (an object with n and m).
"""
from __future__ import annotations

import torch
import torch.distributed as dist

from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp import sharded as S


def any_sharded(driver) -> bool:
    """Whether the driver's target weights are DTensors (the model was fully_shard-ed after attach)."""
    return bool(driver.targets) and S.is_sharded(driver.original(driver.targets[0]))


def _kind(pattern) -> str:
    if getattr(pattern, "name", None) in ("unstructured", "row"):
        return pattern.name
    if hasattr(pattern, "n") and hasattr(pattern, "m"):
        return "nm"
    raise NotImplementedError(f"pattern {pattern!r} has no sharded selection (unstructured, row and N:M do)")


def pattern_thresholds(pattern, items: list[tuple[S.DTensor, int, int]]) -> list[torch.Tensor]:
    """``pattern.threshold(full, out_dim, k)[0]`` for each (w, out_dim, k), bit for bit.
    Unstructured thresholds of all items share one set of radix passes (4 all-reduces)."""
    kind = _kind(pattern)
    if kind == "unstructured":
        if not items:
            return []
        group = S.layout(items[0][0]).group
        return S.thresholds([([w.to_local()], k, w.numel()) for w, _, k in items], group)
    if kind == "row":  # Linear's rows are local: their norms share one set of passes
        out = [S.row_threshold(w, out_dim, k) if out_dim else None for w, out_dim, k in items]
        rows = [(i, w, k) for i, (w, out_dim, k) in enumerate(items) if not out_dim]
        if rows:
            local = [([S.row_sq(w.to_local().detach(), 0).sqrt()], k, w.shape[0]) for _, w, k in rows]
            for (i, _, _), t in zip(rows, S.thresholds(local, S.layout(rows[0][1]).group)):
                out[i] = t
        return out
    return [S.nm_threshold(w, out_dim, k, pattern.m) for w, out_dim, k in items]


def pattern_keep(pattern, scores: torch.Tensor, lay: S.Layout, out_dim: int, k: int) -> torch.Tensor:
    """This rank's rows of ``pattern.keep(full scores, out_dim, k)``."""
    kind = _kind(pattern)
    if kind == "unstructured":
        return S.keep_smallest(scores, k, int(torch.Size(lay.shape).numel()), lay)
    if kind == "row":
        return S.row_keep(scores, lay, out_dim, k)
    return S.nm_keep(scores, lay, out_dim, k, pattern.m)


def fake_quant(local: torch.Tensor, bits: int, out_dim: int, lay: S.Layout) -> torch.Tensor:
    """``mask.fake_quant`` of the full weight, on this rank's rows: per-output-channel scales
    are maxima, and a maximum over shards (one all-reduce) is exact."""
    if out_dim == 0:
        return M.fake_quant(local, bits, 0)
    qmax = 2 ** (bits - 1) - 1
    amax = local.detach().abs().amax(dim=0, keepdim=True) if lay.rows else local.new_zeros(1, lay.shape[1])
    amax = S.all_reduce(amax.contiguous(), lay.group, dist.ReduceOp.MAX)
    s = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    q = torch.clamp(torch.round(local / s), -qmax, qmax) * s
    return local + (q - local).detach()


def _is_soft(mask) -> bool:
    return hasattr(mask, "t") and not hasattr(mask, "keep")


@torch.no_grad()
def refresh(driver) -> None:
    """``driver.refresh()`` for targets whose weights are DTensors: the same buffers, bit for bit,
    on every rank.  PDP's thresholds and gradual magnitude pruning (gmp) are supported; one-shot
    methods compute their masks at attach, before the model is sharded."""
    masks = [driver.mask_of(t) for t in driver.targets]
    if all(_is_soft(m) for m in masks):
        ks = []
        for t, m in zip(driver.targets, masks):
            m.sparsity = float(driver.layer_sparsity(t.name))
            ks.append(m._k(m.sparsity))
        ts = pattern_thresholds(driver.pattern, [(driver.original(t), t.out_dim, k)
                                                 for t, k in zip(driver.targets, ks)])
        for m, t, k in zip(masks, ts, ks):
            m.t.copy_(t.to(m.t.dtype))
            m.active = k > 0 and bool((m.t > 0).any())
        return
    if driver.one_shot:
        return
    if getattr(driver, "method", None) != "gmp":
        raise NotImplementedError(f"method {getattr(driver, 'method', driver)!r} has no sharded update")
    for t, hm in zip(driver.targets, masks):
        _gmp_update(driver, t, hm, driver.layer_sparsity(t.name))


def _gmp_update(driver, t, hm, sparsity: float) -> None:
    """baselines.GMP.update on a shard: pruned weights stay pruned (they score 0)."""
    w = driver.original(t)
    lay = S.layout(w)
    local = w.to_local().detach()
    pattern = driver.pattern
    score = local.abs()
    k_new = M.num_pruned(w.numel(), sparsity)
    pruned = int((~hm.keep).sum())  # the full keep-mask is the same on every rank
    k = pattern.num_pruned(w.shape, t.out_dim, sparsity)
    if pruned <= k_new:
        score = score * S.my_rows(hm.keep, lay)
        if pruned == k_new and _kind(pattern) == "unstructured":
            nonzero = S.all_reduce(torch.count_nonzero(score).reshape(1).to(torch.int64), lay.group)
            if int(nonzero) == w.numel() - k:
                return  # the k zero scores are the k smallest: the mask would come back unchanged
    hm.keep.copy_(S.gather_dim0(pattern_keep(pattern, score, lay, t.out_dim, k), lay))


@torch.no_grad()
def finalize(driver):
    """``driver.finalize()`` on DTensor weights: every rank writes exact zeros (+0.0) into its own
    shard.  The parametrizations stay (FSDP keeps hold of the parameters inside them) but become
    the identity, so the sharded model now computes what the saved one will; the plain model is
    gathered from the shards (train.distributed.gather_plain_state)."""
    for t in driver.targets:
        w, m = driver.original(t), driver.mask_of(t)
        lay = S.layout(w)
        local = w.to_local()
        if hasattr(m, "keep"):
            keep = S.my_rows(m.keep, lay)
        else:
            keep = pattern_keep(driver.pattern, local.detach().abs(), lay, t.out_dim, m._k(m.sparsity))
        out = torch.where(keep, local, torch.zeros((), dtype=local.dtype, device=local.device))
        if getattr(m, "bits", None) is not None:
            out = fake_quant(out, m.bits, t.out_dim, lay)
        local.copy_(out)
        _identity(m)
    driver.targets = []
    return driver.model


def _identity(m) -> None:
    if hasattr(m, "keep"):
        m.keep.fill_(True)
    else:
        m.active = False
    m.bits = None


@torch.no_grad()
def remove(driver):
    """``driver.remove()`` on DTensor weights: the dense weights stay as they are and every mask
    becomes the identity (removing a parametrization would pull the parameter out from under FSDP)."""
    for t in driver.targets:
        _identity(driver.mask_of(t))
    driver.targets = []
    return driver.model


# ---- what the drivers report ----------------------------------------------------------------


@torch.no_grad()
def local_mask(driver, t) -> torch.Tensor:
    """This rank's rows of ``driver.mask_of(t).soft_mask(full weight)``, the same values."""
    w, m = driver.original(t), driver.mask_of(t)
    lay = S.layout(w)
    local = w.to_local().detach()
    if hasattr(m, "keep"):
        return S.my_rows(m.keep, lay).to(local.dtype)
    if not m.active:
        return torch.ones_like(local)
    kind, tt = _kind(driver.pattern), m.t.to(local.dtype)
    if kind == "row" and t.out_dim == 1:  # column norms need whole columns
        return S.my_rows(m.soft_mask(w.full_tensor()), lay)
    if kind == "nm":  # this rank's groups' thresholds (groups never straddle shards)
        per = driver.pattern.m
        if t.out_dim == 0:
            tt = tt.view(lay.shape[0], -1)[lay.row0:lay.row0 + lay.rows].reshape(-1, 1)
        else:
            tt = tt.view(lay.shape[1], -1)[:, lay.row0 // per:(lay.row0 + lay.rows) // per].reshape(-1, 1)
    return driver.pattern.soft_mask(local, t.out_dim, tt, m.tau, m.tau_mode, m.beta).expand_as(local)


@torch.no_grad()
def mask_counts(driver) -> dict[str, tuple[int, int, int, float]]:
    """Per target: (entries, m < 0.5, m inside mask.BAND, sum of m) over the whole tensor, from
    the shards: local counts, one all-reduce for all targets (MaskDriver.stats' numbers)."""
    lo, hi = M.BAND
    rows = []
    for t in driver.targets:
        m = local_mask(driver, t)
        rows.append(torch.stack([(m < 0.5).sum(), ((m > lo) & (m < hi)).sum(), m.sum()]).double())
    if not rows:
        return {}
    total = S.all_reduce(torch.stack(rows), S.layout(driver.original(driver.targets[0])).group).tolist()
    return {t.name: (driver.original(t).numel(), int(z), int(b), float(s))
            for t, (z, b, s) in zip(driver.targets, total)}
