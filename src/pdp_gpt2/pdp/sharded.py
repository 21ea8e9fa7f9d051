"""Exact selection on sharded weights (FSDP2: ``fully_shard`` makes each weight a DTensor
sharded along dim 0), with the same bits as the full-tensor functions in ``mask.py``.

No rank gathers a weight to rank it.  Each rank ranks its own shard and the ranks
agree through all-reduces of small histograms:

* Radix selection.  A non-negative float's bit pattern, read as an integer, orders like
  the float (|w|, row norms and Wanda scores are never negative; ``abs`` turns -0.0 into
  +0.0).  One pass per 8-bit digit, most significant first: every rank histograms the
  digit among its entries whose higher digits equal the prefix found so far, one
  all-reduce sums the histograms, and every rank reads off the same next digit.  After
  the last pass the prefix *is* the k-th smallest key: an exact value, found in 4 passes
  for float32 (2 for bfloat16/float16, 8 for float64), whatever the data.  The k-th and
  (k+1)-th smallest are found in the same passes, so a threshold (their midpoint,
  computed in the weight's dtype as ``mask.threshold`` does) costs 4 all-reduces of
  256 (or 512) int64 counts, and many tensors share those calls (:func:`thresholds`).
* Index-ordered ties.  ``mask.hard_mask_from_scores`` prunes, among the entries equal to
  the k-th smallest value, those of lowest flat index.  Shard(0) chunks are consecutive
  rows in rank order, so the global flat order is (chunk, local index): one all-reduce of
  the per-rank tie counts tells each rank how many of its own ties to prune.

What cannot be sharded exactly is refused or gathered, never approximated:
row norms of GPT-2's Conv1D (output neurons are columns of an (in, out) weight, and a
sum over shards rounds differently from the full sum) are computed from the gathered
weight; N:M groups must not straddle a shard boundary (:func:`check_nm`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pdp_gpt2.pdp import mask as M

try:  # builds without torch.distributed (some macOS/mobile wheels) have no DTensor: nothing is sharded
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover
    DTensor = Shard = None

DIGIT = 8  # bits per radix pass: 256 buckets
_KEY = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16, torch.float16: torch.int16}
_KEY_BITS = {torch.int32: 31, torch.int64: 63, torch.int16: 15}  # the sign bit is always 0
# Every call into torch.distributed made here, counted (docs/performance.md "Sharded").
comm = {"all_reduce": 0, "all_reduce_bytes": 0, "all_gather": 0, "all_gather_bytes": 0}


def is_sharded(w) -> bool:
    return DTensor is not None and isinstance(w, DTensor)


def any_sharded(driver) -> bool:
    """Whether the driver's target weights are DTensors (the model was fully_shard-ed after attach)."""
    return bool(driver.targets) and is_sharded(driver.original(driver.targets[0]))


@dataclass(frozen=True)
class Layout:
    """Where one rank's shard sits in a DTensor sharded along dim 0 over a 1-D mesh."""

    group: object  # the ProcessGroup of the mesh
    index: int  # this rank's chunk: chunks are in rank order along dim 0
    world: int
    row0: int  # global index of the first local row
    rows: int  # local rows
    shape: torch.Size  # the global shape

    @property
    def chunk(self) -> int:
        """Rows per chunk (the last one may be shorter or empty), as torch.chunk cuts them."""
        return math.ceil(self.shape[0] / self.world) if self.shape[0] else 0


def layout(w: DTensor) -> Layout:
    """The layout of ``w``; refuses anything but Shard(0) on a 1-D mesh (what fully_shard makes)."""
    mesh = w.device_mesh
    if mesh.ndim != 1 or tuple(w.placements) != (Shard(0),):
        raise ValueError(f"sharded PDP needs weights sharded along dim 0 on a 1-D mesh (fully_shard's "
                         f"default), got placements {tuple(w.placements)} on a {mesh.ndim}-D mesh")
    world, index = mesh.size(), mesh.get_local_rank()
    cs = math.ceil(w.shape[0] / world)
    row0 = min(index * cs, w.shape[0])
    rows = max(0, min(cs, w.shape[0] - row0))
    if w.to_local().shape[0] != rows:
        raise ValueError(f"shard of {tuple(w.shape)} has {w.to_local().shape[0]} rows on rank {index}, "
                         f"expected {rows} (uneven sharding other than torch.chunk's is not supported)")
    return Layout(mesh.get_group(), index, world, row0, rows, w.shape)


def _all_reduce(t: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    comm["all_reduce"] += 1
    comm["all_reduce_bytes"] += t.numel() * t.element_size()
    dist.all_reduce(t, op=op, group=group)
    return t


# ---- radix selection ---------------------------------------------------------------------


def keys(x: torch.Tensor) -> torch.Tensor:
    """Flat integer keys that order like the non-negative floats ``x`` (|x| is taken)."""
    if x.dtype not in _KEY:
        raise TypeError(f"sharded selection supports float32/64, bfloat16 and float16, not {x.dtype}")
    return x.detach().abs().reshape(-1).contiguous().view(_KEY[x.dtype])


def _digits(bits: int) -> list[int]:
    """Digit widths, most significant first (31 bits -> 7, 8, 8, 8)."""
    widths = [DIGIT] * (bits // DIGIT)
    return ([bits % DIGIT] if bits % DIGIT else []) + widths


def select(jobs: list[tuple[list[torch.Tensor], list[int]]], group) -> list[list[tuple[int, int, int]]]:
    """Order statistics of the global union of every rank's keys, for several jobs at once.

    ``jobs``: (local key tensors, ranks r (1-based) to find), the same on every rank but the
    tensors.  Returns, per job and rank, (key of the r-th smallest, how many keys are
    smaller, how many equal).  All jobs share each pass's all-reduce; keys must share a dtype.
    """
    if not jobs:
        return []
    kdt = jobs[0][0][0].dtype
    device = jobs[0][0][0].device
    # one state per (job, rank): prefix so far, rank within it, count below
    state = [[[0, r, 0] for r in ranks] for _, ranks in jobs]
    cands = [{0: list(ks)} for ks, _ in jobs]  # per job: prefix -> its candidate keys
    bits = _KEY_BITS[kdt]
    shift = bits
    # int32 counts halve the bytes; any count is at most the number of keys in a job
    most = max(sum(k.numel() for k in ks) for ks, _ in jobs) * dist.get_world_size(group)
    count_dtype = torch.int32 if most < 2**31 else torch.int64
    for width in _digits(bits):
        shift -= width
        mask = (1 << width) - 1
        order = [(j, p) for j, c in enumerate(cands) for p in sorted(c)]
        hists = []
        for j, p in order:
            h = torch.zeros(1 << width, dtype=torch.int64, device=device)
            for c in cands[j][p]:
                if c.numel():
                    h += torch.bincount(((c >> shift) & mask).long(), minlength=1 << width)
            hists.append(h)
        total = _all_reduce(torch.cat(hists).to(count_dtype), group).view(len(order), -1).cpu().long()
        slot = {jp: i for i, jp in enumerate(order)}
        new_cands = []
        for j, st in enumerate(state):
            nc = {}
            for s in st:
                h = total[slot[(j, s[0])]]
                cum = h.cumsum(0)
                d = int(torch.searchsorted(cum, torch.tensor(s[1]), right=False))
                before = int(cum[d - 1]) if d else 0
                prefix = (s[0] << width) | d
                if prefix not in nc:
                    nc[prefix] = [c[((c >> shift) & mask) == d] for c in cands[j][s[0]]]
                s[0], s[1], s[2] = prefix, s[1] - before, s[2] + before
                s.append(int(h[d]))  # equal count, meaningful after the last pass
            new_cands.append(nc)
        cands = new_cands
    return [[(s[0], s[2], s[-1]) for s in st] for st in state]


def _value(key: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(key, dtype=_KEY[dtype]).view(dtype).to(device)


def _pair_ranks(k: int, n: int) -> list[int]:
    return [n] if k >= n else [k, k + 1]


def _midpoint(found, k: int, n: int, dtype, device) -> torch.Tensor:
    if k >= n:
        return _value(found[0][0], dtype, device)
    return (_value(found[0][0], dtype, device) + _value(found[1][0], dtype, device)) / 2


def thresholds(items: list[tuple[list[torch.Tensor], int, int]], group) -> list[torch.Tensor]:
    """``mask.threshold`` of each global score vector, bit for bit, in one set of passes.

    ``items``: (local non-negative score tensors, k, global n).  Each result is a 0-d tensor.
    """
    out: list = [None] * len(items)
    by_dtype: dict = {}
    for i, (xs, k, n) in enumerate(items):
        if k <= 0:
            out[i] = xs[0].new_zeros(()).detach()
        else:
            by_dtype.setdefault(xs[0].dtype, []).append(i)
    for dtype, idx in by_dtype.items():
        found = select([([keys(x) for x in items[i][0]], _pair_ranks(items[i][1], items[i][2])) for i in idx], group)
        for i, f in zip(idx, found):
            out[i] = _midpoint(f, items[i][1], items[i][2], dtype, items[i][0][0].device)
    return out


def abs_threshold(w: DTensor, k: int) -> torch.Tensor:
    """``mask.threshold(full.abs(), k)`` of the DTensor ``w``, from its local shard."""
    return thresholds([([w.to_local()], k, w.numel())], layout(w).group)[0]


def keep_smallest(scores: torch.Tensor, k: int, n: int, lay: Layout) -> torch.Tensor:
    """This rank's part of ``mask.hard_mask_from_scores(global scores, k)`` (same shape as ``scores``).

    ``scores``: this rank's chunk of a global score tensor cut along dim 0 in rank order
    (a weight shard, or the shard's row scores), ``n`` the global number of scores.
    """
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if k >= n:
        return torch.zeros_like(scores, dtype=torch.bool)
    key = keys(scores)
    (v, below, _), = select([([key], [k])], lay.group)[0]
    keep = key > v
    ties = (key == v).nonzero().squeeze(1)  # ascending local index
    counts = torch.zeros(lay.world, dtype=torch.int64, device=scores.device)
    counts[lay.index] = ties.numel()
    counts = _all_reduce(counts, lay.group).cpu()
    need = k - below - int(counts[:lay.index].sum())  # ties still to prune when my chunk starts
    keep[ties[max(0, min(need, ties.numel())):]] = True
    return keep.view_as(scores)


# ---- gathering small per-row results -----------------------------------------------------


def gather_dim0(local: torch.Tensor, lay: Layout, per_row: int = 1, per: int = 1) -> torch.Tensor:
    """The global tensor whose chunk along dim 0 on each rank is ``local``.

    ``local`` has ``rows * per_row / per`` entries along dim 0 for the shard's rows (1, 1 for
    things per weight row; 1, M for N:M groups along dim 0).  Chunks are padded to equal
    size for the all-gather and trimmed after it.  Bools travel as uint8 (gloo has no bool).
    """
    chunk = lay.chunk * per_row // per
    total = lay.shape[0] * per_row // per
    send = local.to(torch.uint8) if local.dtype == torch.bool else local
    buf = send.new_zeros((chunk,) + tuple(send.shape[1:]))
    buf[:send.shape[0]] = send
    parts = [torch.empty_like(buf) for _ in range(lay.world)]
    comm["all_gather"] += 1
    comm["all_gather_bytes"] += buf.numel() * buf.element_size() * lay.world
    dist.all_gather(parts, buf.contiguous(), group=lay.group)
    full = torch.cat(parts)[:total]
    return full.bool() if local.dtype == torch.bool else full


def my_rows(full: torch.Tensor, lay: Layout) -> torch.Tensor:
    """This rank's chunk of a full tensor laid out like the weight (e.g. a keep-mask buffer)."""
    return full[lay.row0:lay.row0 + lay.rows]


# ---- patterns ---------------------------------------------------------------------------


def _row_sq(x: torch.Tensor, out_dim: int) -> torch.Tensor:
    return (x * x).sum(dim=1 - out_dim, keepdim=True)  # as PDPMask._row_sq


def row_threshold(w: DTensor, out_dim: int, k: int) -> torch.Tensor:
    """``mask.threshold`` of the output-row L2 norms of ``w``, bit for bit.

    Linear (out_dim 0): each rank holds whole rows, so its norms are exact and only the
    ranking is distributed.  Conv1D (out_dim 1): rows are columns split across ranks, and
    summing partial sums would round differently, so the norms come from the gathered weight.
    """
    if out_dim == 0:
        local = w.to_local().detach()
        return thresholds([([_row_sq(local, 0).sqrt()], k, w.shape[0])], layout(w).group)[0]
    full = w.full_tensor().detach()
    comm["all_gather"] += 1
    comm["all_gather_bytes"] += full.numel() * full.element_size()
    return M.threshold(_row_sq(full, 1).sqrt(), k)


def row_keep(scores: torch.Tensor, lay: Layout, out_dim: int, k: int) -> torch.Tensor:
    """Local part of the keep-mask pruning the k output rows of smallest squared L2 norm of
    ``scores`` (this rank's chunk of a weight-shaped score tensor), ties by row index."""
    if out_dim == 0:
        keep_rows = keep_smallest((scores * scores).sum(dim=1), k, lay.shape[0], lay)
        return keep_rows.view(-1, 1).expand_as(scores)
    full = gather_dim0(scores, lay)
    keep_cols = M.hard_mask_from_scores((full * full).sum(dim=0), k)
    return keep_cols.view(1, -1).expand_as(scores)


def check_nm(lay: Layout, out_dim: int, m: int) -> None:
    """N:M groups run along the input dimension; under Conv1D's (in, out) layout that is dim 0,
    the one FSDP shards, and a group must not straddle two ranks."""
    if out_dim == 1 and lay.chunk % m:
        raise ValueError(f"N:M groups of {m} would straddle shards: a Conv1D weight {tuple(lay.shape)} "
                         f"split over {lay.world} ranks has {lay.chunk} input rows per rank, not a multiple "
                         f"of {m}; use a world size that divides {lay.shape[0] // m}")


def nm_threshold(w: DTensor, out_dim: int, k: int, m: int) -> torch.Tensor:
    """``mask.nm_threshold(in_last(full, out_dim), k, m)``: per-group, so each rank computes its
    own groups exactly and one all-gather assembles them (shape (groups, 1))."""
    from pdp_gpt2.pdp.targets import in_last

    lay = layout(w)
    check_nm(lay, out_dim, m)
    local = w.to_local().detach()
    t = M.nm_threshold(in_last(local, out_dim), k, m)
    if out_dim == 0:  # (rows, in): my groups are rows row0.. of the (out, in / M) group grid
        return gather_dim0(t.view(lay.rows, -1), lay).reshape(-1, 1)
    out = lay.shape[1]  # (in, out) -> groups of (out, in / M); mine are columns row0 / M ..
    grid = gather_dim0(t.view(out, -1).t().contiguous(), lay, per=m)
    return grid.t().reshape(-1, 1)


def nm_keep(local: torch.Tensor, lay: Layout, out_dim: int, k: int, m: int) -> torch.Tensor:
    """Local keep-mask of N:M (each group lies on one rank, so this is local math)."""
    from pdp_gpt2.pdp.targets import from_in_last, in_last

    check_nm(lay, out_dim, m)
    return from_in_last(M.nm_hard_mask(in_last(local, out_dim), k, m), out_dim)


# ---- global allocation --------------------------------------------------------------------


@torch.no_grad()
def global_budgets(weights: dict[str, DTensor], sparsity: float) -> dict[str, float]:
    """``attach.global_budgets`` of sharded weights, bit for bit: one radix selection over the
    union of every tensor's |w| (as float32), then one all-reduce of per-tensor counts."""
    if sparsity == 0:
        return {k: 1.0 for k in weights}
    group = layout(next(iter(weights.values()))).group
    local = [w.to_local().detach().abs().float() for w in weights.values()]
    n = sum(w.numel() for w in weights.values())
    t = thresholds([(local, M.num_pruned(n, sparsity), n)], group)[0]
    below = torch.stack([(x < t).sum() for x in local]).to(torch.int64)
    below = _all_reduce(below, group).cpu()
    # the same float32 mean the full-tensor version takes (a float32 sum of 0/1 is exact below 2^24)
    return {name: float(torch.tensor(float(c), dtype=torch.float32) / w.numel()) / sparsity
            for (name, w), c in zip(weights.items(), below.tolist())}


# ---- patterns and drivers on sharded weights -----------------------------------------------
# A pattern (patterns.py) is named by duck type so this module needs none of the drivers:
# 'unstructured', 'row', or N:M (an object with n and m).


def _kind(pattern) -> str:
    if getattr(pattern, "name", None) in ("unstructured", "row"):
        return pattern.name
    if hasattr(pattern, "n") and hasattr(pattern, "m"):
        return "nm"
    raise NotImplementedError(f"pattern {pattern!r} has no sharded selection (unstructured, row and N:M do)")


def pattern_thresholds(pattern, items: list[tuple[DTensor, int, int]]) -> list[torch.Tensor]:
    """``pattern.threshold(full, out_dim, k)[0]`` for each (w, out_dim, k), bit for bit.
    Unstructured thresholds of all items share one set of radix passes (4 all-reduces)."""
    kind = _kind(pattern)
    if kind == "unstructured":
        if not items:
            return []
        group = layout(items[0][0]).group
        return thresholds([([w.to_local()], k, w.numel()) for w, _, k in items], group)
    if kind == "row":  # Linear's rows are local: their norms share one set of passes
        out = [row_threshold(w, out_dim, k) if out_dim else None for w, out_dim, k in items]
        rows = [(i, w, k) for i, (w, out_dim, k) in enumerate(items) if not out_dim]
        if rows:
            local = [([_row_sq(w.to_local().detach(), 0).sqrt()], k, w.shape[0]) for _, w, k in rows]
            for (i, _, _), t in zip(rows, thresholds(local, layout(rows[0][1]).group)):
                out[i] = t
        return out
    return [nm_threshold(w, out_dim, k, pattern.m) for w, out_dim, k in items]


def pattern_keep(pattern, scores: torch.Tensor, lay: Layout, out_dim: int, k: int) -> torch.Tensor:
    """This rank's rows of ``pattern.keep(full scores, out_dim, k)``."""
    kind = _kind(pattern)
    if kind == "unstructured":
        return keep_smallest(scores, k, int(torch.Size(lay.shape).numel()), lay)
    if kind == "row":
        return row_keep(scores, lay, out_dim, k)
    return nm_keep(scores, lay, out_dim, k, pattern.m)


def fake_quant(local: torch.Tensor, bits: int, out_dim: int, lay: Layout) -> torch.Tensor:
    """``mask.fake_quant`` of the full weight, on this rank's rows: per-output-channel scales
    are maxima, and a maximum over shards (one all-reduce) is exact."""
    if out_dim == 0:
        return M.fake_quant(local, bits, 0)
    qmax = 2 ** (bits - 1) - 1
    amax = local.detach().abs().amax(dim=0, keepdim=True) if lay.rows else local.new_zeros(1, lay.shape[1])
    amax = _all_reduce(amax.contiguous(), lay.group, dist.ReduceOp.MAX)
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
    lay = layout(w)
    local = w.to_local().detach()
    pattern = driver.pattern
    score = local.abs()
    k_new = M.num_pruned(w.numel(), sparsity)
    pruned = int((~hm.keep).sum())  # the full keep-mask is the same on every rank
    k = pattern.num_pruned(w.shape, t.out_dim, sparsity)
    if pruned <= k_new:
        score = score * my_rows(hm.keep, lay)
        if pruned == k_new and _kind(pattern) == "unstructured":
            nonzero = _all_reduce(torch.count_nonzero(score).reshape(1).to(torch.int64), lay.group)
            if int(nonzero) == w.numel() - k:
                return  # the k zero scores are the k smallest: the mask would come back unchanged
    hm.keep.copy_(gather_dim0(pattern_keep(pattern, score, lay, t.out_dim, k), lay))


@torch.no_grad()
def finalize(driver):
    """``driver.finalize()`` on DTensor weights: every rank writes exact zeros (+0.0) into its own
    shard.  The parametrizations stay (FSDP keeps hold of the parameters inside them) but become
    the identity, so the sharded model now computes what the saved one will; the plain model is
    gathered from the shards (train.distributed.gather_plain_state)."""
    for t in driver.targets:
        w, m = driver.original(t), driver.mask_of(t)
        lay = layout(w)
        local = w.to_local()
        if hasattr(m, "keep"):
            keep = my_rows(m.keep, lay)
        else:
            keep = pattern_keep(driver.pattern, local.detach().abs(), lay, t.out_dim, m._k(m.sparsity))
        out = torch.where(keep, local, torch.zeros((), dtype=local.dtype, device=local.device))
        if getattr(m, "bits", None) is not None:
            out = fake_quant(out, m.bits, t.out_dim, lay)
        local.copy_(out)
        if hasattr(m, "keep"):
            m.keep.fill_(True)
            m.bits = None
        else:
            m.active, m.bits = False, None
    driver.targets = []
    return driver.model


# ---- what the drivers report ----------------------------------------------------------------


@torch.no_grad()
def local_mask(driver, t) -> torch.Tensor:
    """This rank's rows of ``driver.mask_of(t).soft_mask(full weight)``, the same values."""
    w, m = driver.original(t), driver.mask_of(t)
    lay = layout(w)
    local = w.to_local().detach()
    if hasattr(m, "keep"):
        return my_rows(m.keep, lay).to(local.dtype)
    if not m.active:
        return torch.ones_like(local)
    kind, tt = _kind(driver.pattern), m.t.to(local.dtype)
    if kind == "row" and t.out_dim == 1:  # column norms need whole columns
        return my_rows(m.soft_mask(w.full_tensor()), lay)
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
    total = _all_reduce(torch.stack(rows), layout(driver.original(driver.targets[0])).group).tolist()
    return {t.name: (driver.original(t).numel(), int(z), int(b), float(s))
            for t, (z, b, s) in zip(driver.targets, total)}
