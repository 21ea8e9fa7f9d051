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

The drivers' refresh, finalize and stats on sharded weights are in pdp/sharded_driver.py.
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


def _on_comm_device(t: torch.Tensor, group) -> torch.Tensor:
    """NCCL sends only CUDA tensors; shards may sit on the CPU (FSDP's CPU offload)."""
    if t.device.type == "cpu" and dist.get_backend(group) == "nccl":
        return t.cuda()
    return t


def all_reduce(t: torch.Tensor, group, op=dist.ReduceOp.SUM) -> torch.Tensor:
    comm["all_reduce"] += 1
    comm["all_reduce_bytes"] += t.numel() * t.element_size()
    sent = _on_comm_device(t, group)
    dist.all_reduce(sent, op=op, group=group)
    return sent.to(t.device)


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
        total = all_reduce(torch.cat(hists).to(count_dtype), group).view(len(order), -1).cpu().long()
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
    counts = all_reduce(counts, lay.group).cpu()
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
    buf = _on_comm_device(buf.contiguous(), lay.group)
    parts = [torch.empty_like(buf) for _ in range(lay.world)]
    comm["all_gather"] += 1
    comm["all_gather_bytes"] += buf.numel() * buf.element_size() * lay.world
    dist.all_gather(parts, buf, group=lay.group)
    full = torch.cat(parts)[:total].to(local.device)
    return full.bool() if local.dtype == torch.bool else full


def my_rows(full: torch.Tensor, lay: Layout) -> torch.Tensor:
    """This rank's chunk of a full tensor laid out like the weight (e.g. a keep-mask buffer)."""
    return full[lay.row0:lay.row0 + lay.rows]


# ---- patterns ---------------------------------------------------------------------------


def row_sq(x: torch.Tensor, out_dim: int) -> torch.Tensor:
    return (x * x).sum(dim=1 - out_dim, keepdim=True)  # as PDPMask._row_sq


def row_threshold(w: DTensor, out_dim: int, k: int) -> torch.Tensor:
    """``mask.threshold`` of the output-row L2 norms of ``w``, bit for bit.

    Linear (out_dim 0): each rank holds whole rows, so its norms are exact and only the
    ranking is distributed.  Conv1D (out_dim 1): rows are columns split across ranks, and
    summing partial sums would round differently, so the norms come from the gathered weight.
    """
    if out_dim == 0:
        local = w.to_local().detach()
        return thresholds([([row_sq(local, 0).sqrt()], k, w.shape[0])], layout(w).group)[0]
    full = w.full_tensor().detach()
    comm["all_gather"] += 1
    comm["all_gather_bytes"] += full.numel() * full.element_size()
    return M.threshold(row_sq(full, 1).sqrt(), k)


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
    below = all_reduce(below, group).cpu()
    # the same float32 mean the full-tensor version takes (a float32 sum of 0/1 is exact below 2^24)
    return {name: float(torch.tensor(float(c), dtype=torch.float32) / w.numel()) / sparsity
            for (name, w), c in zip(weights.items(), below.tolist())}
