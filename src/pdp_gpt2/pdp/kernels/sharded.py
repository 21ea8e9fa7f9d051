"""Shards (FSDP2: each weight a DTensor sharded along dim 0): where a shard sits, the few
collectives the selection needs, and the exact radix selection.

No rank gathers a weight to rank it. The radix selection reads a non-negative float's bit pattern
as an integer, which orders like the float: one pass per 8-bit digit, every rank histograms its
entries, one all-reduce sums the histograms, and after the last pass (4 for float32) the prefix is
the k-th smallest, exactly. Index-ordered ties use the global flat index (shards are consecutive
rows in rank order: :func:`before_me`). A unit that straddles shards (a Conv1D column's norm,
whose sum over shards rounds differently) is computed from the gathered weight, never
approximated. Every call into torch.distributed is counted in ``comm`` (docs/performance.md,
"Sharded").
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

try:  # builds without torch.distributed (some macOS/mobile wheels) have no DTensor: nothing is sharded
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover
    DTensor = Shard = None

DIGIT = 8  # bits per radix pass: 256 buckets
_KEY = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16, torch.float16: torch.int16}
_KEY_BITS = {torch.int32: 31, torch.int64: 63, torch.int16: 15}  # the sign bit is always 0
# Every call into torch.distributed made here, counted (docs/performance.md "Sharded").  Process-wide on
# purpose: a write-only counter that no result depends on, read by benchmarks and tests around a step.
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
    """``t`` summed (or ``op``) over the group's ranks; ``t`` itself when ``group`` is None."""
    if group is None:
        return t
    comm["all_reduce"] += 1
    comm["all_reduce_bytes"] += t.numel() * t.element_size()
    sent = _on_comm_device(t, group)
    dist.all_reduce(sent, op=op, group=group)
    return sent.to(t.device)


def barrier() -> None:
    """Wait for every rank (a no-op in one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_reduce_max(t: torch.Tensor, group) -> torch.Tensor:
    return all_reduce(t, group, dist.ReduceOp.MAX)


def all_gather_fixed(t: torch.Tensor, group) -> torch.Tensor:
    """Every rank's ``t`` (the same shape on every rank), stacked along a new dim 0 in rank order."""
    sent = _on_comm_device(t.contiguous(), group)
    parts = [torch.empty_like(sent) for _ in range(dist.get_world_size(group))]
    comm["all_gather"] += 1
    comm["all_gather_bytes"] += sent.numel() * sent.element_size() * len(parts)
    dist.all_gather(parts, sent, group=group)
    return torch.stack(parts).to(t.device)


def before_me(count: torch.Tensor, group) -> torch.Tensor:
    """The sum of ``count`` (a 0-d or 1-d tensor) over the ranks before this one (0 in one process)."""
    if group is None:
        return torch.zeros_like(count)
    every = all_gather_fixed(count, group)
    return every[:dist.get_rank(group)].sum(0)


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


def radix_select(jobs: list[tuple[list[torch.Tensor], list[int]]], group) -> list[list[tuple[int, int, int]]]:
    """Order statistics of the global union of every rank's keys, for several jobs at once.

    ``jobs``: (local key tensors, ranks r (1-based) to find), the same on every rank but the
    tensors.  Returns, per job and rank, (key of the r-th smallest, how many keys are
    smaller, how many equal).  All jobs share each pass's all-reduce; keys must share a dtype.
    ``group`` None: one process.  It reads each pass's histograms on the host, so it is the exact
    fallback of pdp/kernels/select.py (a bracket that keeps missing), not the per-step path.
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
    most = max(sum(k.numel() for k in ks) for ks, _ in jobs) * (dist.get_world_size(group) if group else 1)
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


def key_value(key: int, dtype: torch.dtype, device) -> torch.Tensor:
    return torch.tensor(key, dtype=_KEY[dtype]).view(dtype).to(device)


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


def check_nm(lay: Layout, out_dim: int, m: int) -> None:
    """N:M groups run along the input dimension; under Conv1D's (in, out) layout that is dim 0,
    the one FSDP shards, and a group must not straddle two ranks."""
    if out_dim == 1 and lay.chunk % m:
        raise ValueError(f"N:M groups of {m} would straddle shards: a Conv1D weight {tuple(lay.shape)} "
                         f"split over {lay.world} ranks has {lay.chunk} input rows per rank, not a multiple "
                         f"of {m}; use a world size that divides {lay.shape[0] // m}")
