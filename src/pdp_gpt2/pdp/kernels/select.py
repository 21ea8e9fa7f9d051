"""Exact order statistics of many score vectors at once, with the work and the counts on the device.

After every optimizer step each target needs the k-th and (k+1)-th smallest of its scores (|w|,
a row norm, a Wanda score). This module gives the results of ``mask.threshold`` and
``mask.hard_mask_from_scores`` bit for bit, ties included, for every tensor of a model together
and for FSDP2 shards, because a ``kthvalue`` per tensor costs more than the masked forward and
backward, and a host read per tensor stalls a GPU. Each selection starts from a bracket around the
last one (a device-side ``Hint``): one fused pass **counts** the scores below and inside it, the
candidates are **collected** (:class:`Plan`: fixed-size ``topk`` on a GPU, exact on a CPU), and
the pair is **picked** by a device-side index. Every row's verdict comes back in one host read; a
row that missed tries a new bracket, and after ``ROUNDS`` rounds the radix selection
(``sharded.radix_select``) answers. Shards agree through one all-reduce and one all-gather a round.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass

import torch

from pdp_gpt2.pdp.kernels import sharded as S

SB = 256  # entries per counting block (smaller blocks made the counting pass 2x slower on CPU)
SMALL = 1 << 14  # vectors this short (globally) are sorted whole
ROUNDS = 6  # bracket rounds before the exact radix selection takes over
SAMPLE = 4096  # entries in the strided sample that makes a first bracket
# How many rounds (host reads of verdicts) each select() call took, over this process: what
# benchmarks/refresh_rounds.py reports (0: every vector was short and sorted whole).  Process-wide on
# purpose: a write-only counter that no result depends on, read by a benchmark across the whole run.
rounds: collections.Counter = collections.Counter()


@dataclass(frozen=True)
class Plan:
    """How a round collects its candidates (``fused.KernelOptions.collect`` chooses):

    * "fixed": the ``blocks`` blocks with most candidates are gathered and the ``cand`` smallest
      entries inside the bracket kept (two topk): a fixed size, so nothing is read back from the
      device to size it.  A bracket holding more than that costs another round (one more host
      read), so brackets aim at ``aim`` entries, well inside the capacity.  The default on a GPU.
    * "compact": exactly the entries inside (a boolean gather, which reads a count back from the
      device; on a CPU that costs nothing), so any bracket fits.  The default on a CPU, where
      gathering a fixed capacity of whole blocks cost more than the counting pass itself.

    Either gives the same results, bit for bit (tests run both on every device)."""

    compact: bool
    blocks: int = 0
    cand: int = 0
    aim: int = 64


def plan_for(device, kernels=None) -> Plan:
    mode = getattr(kernels, "collect", "auto")
    if mode == "auto":
        mode = "fixed" if device.type == "cuda" else "compact"
    if mode == "compact":
        return Plan(True, aim=256)
    return Plan(False, blocks=2048, cand=4096, aim=512)


@dataclass
class Query:
    """One score vector: ``x`` as this process holds it (flattened; ``abs`` is taken), the ranks
    k and k+1 (1-based, in the global vector of ``n`` scores) and the last call's hint."""

    x: torch.Tensor
    k: int
    n: int
    hint: "Hint | None" = None
    width: int = 0  # sharded and short (n <= SMALL): the length every rank pads its part to


@dataclass
class Hint:
    """Where the last selection on this vector ended (a warm start; never changes a result).
    Device tensors, 0-d float64, so that building the next bracket needs no host transfer."""

    k: int
    value: torch.Tensor  # the k-th smallest found
    density: torch.Tensor  # scores per unit of value near it (0: unknown)
    miss: torch.Tensor  # how far the value was from where this call first expected it
    # the entries around it, ascending (+inf-padded), and how many entries lay below the first:
    # the next bracket is read off them by rank, which follows an uneven density (a gap opening
    # at the threshold as the masks harden) where one density number cannot
    window: torch.Tensor | None = None
    window_below: torch.Tensor | None = None


@dataclass
class Found:
    """The answer for one query: all 0-d device tensors, the same on every rank."""

    lo: torch.Tensor  # the k-th smallest score (x's dtype)
    hi: torch.Tensor  # the (k+1)-th smallest (the k-th again when k == n)
    below: torch.Tensor  # how many scores are < lo (int64)
    equal: torch.Tensor  # how many are == lo (int64)
    hint: Hint | None = None
    ok: torch.Tensor | None = None  # (inside this module) whether the round's counts prove the pair


def select(queries: list[Query], group=None, kernels=None, flags=None) -> tuple[list[Found], list[list[bool]]]:
    """The pair of order statistics of every query (1 <= k <= n), exactly.

    ``group``: the process group the vectors are sharded over (None: whole on this process).
    ``flags(i, found) -> list of 0-d bool tensors``: values the caller wants on the host, read in
    the same transfer as the selection's own verdicts (returned per query).  In a steady state
    (every query with a hint from the last step) the whole call makes one host transfer.
    """
    flags = flags or (lambda i, f: [])
    found: list = [None] * len(queries)
    host: list = [[] for _ in queries]
    # answers whose flags are not on the host yet: first the short vectors, sorted whole
    unread = [i for i, q in enumerate(queries) if q.n <= SMALL]
    for i, f in zip(unread, _sorted_pairs([queries[i] for i in unread], group)):
        found[i] = f
    todo = [i for i, q in enumerate(queries) if q.n > SMALL]
    start = {i: queries[i].hint for i in todo}  # a Hint, None (cold) or a _Bracket (a retry)
    used = 0
    for _ in range(ROUNDS):
        if not todo:
            break
        used += 1
        tried = _round(queries, todo, start, group, kernels)
        verdicts = [tried[i][0].ok for i in todo]
        wanted = [flags(i, tried[i][0]) for i in todo] + [flags(i, found[i]) for i in unread]
        got = _read(verdicts + [v for fl in wanted for v in fl])  # the one host transfer of the round
        ok, rest = got[:len(todo)], got[len(todo):]
        for i, fl in zip(todo + unread, wanted):
            host[i], rest = rest[:len(fl)], rest[len(fl):]
        unread, retry = [], []
        for i, good in zip(todo, ok):
            if good:
                found[i] = tried[i][0]
            else:
                start[i] = tried[i][1]()  # the next bracket, from this round's counts
                retry.append(i)
        todo = retry
    rounds[used + (1 if todo else 0)] += 1  # the radix fallback counted as one more
    for i in todo:  # brackets kept missing (heavy ties, NaNs): the exact radix selection answers
        found[i] = _radix(queries[i], group)
        unread.append(i)
    if unread:
        wanted = [flags(i, found[i]) for i in unread]
        rest = _read([v for fl in wanted for v in fl])
        for i, fl in zip(unread, wanted):
            host[i], rest = rest[:len(fl)], rest[len(fl):]
    return found, host


def _read(values: list[torch.Tensor]) -> list[bool]:
    """0-d boolean device tensors to host bools, in one transfer."""
    if not values:
        return []
    return torch.stack([v.reshape(()).to(torch.bool) for v in values]).tolist()


# ---- small vectors: sort them whole ---------------------------------------------------------


def _sorted_pairs(queries: list[Query], group) -> list[Found]:
    """Short vectors, sorted whole (under shards: every rank sorts the joined vectors, all of them
    gathered in one call, each rank's part padded with +inf to the query's width)."""
    xs = [q.x.detach().reshape(-1).abs() for q in queries]
    if group is not None and xs:
        padded = torch.cat([torch.nn.functional.pad(x, (0, q.width - x.numel()), value=math.inf)
                            for q, x in zip(queries, xs)])
        every = S.all_gather_fixed(padded, group)  # (world, sum of widths)
        xs = [part.reshape(-1) for part in every.split([q.width for q in queries], dim=1)]
    out = []
    for q, x in zip(queries, xs):
        srt = x.sort().values
        lo, hi = srt[q.k - 1], srt[min(q.k, q.n - 1)]
        below = torch.searchsorted(srt, lo.reshape(1), right=False)[0]
        equal = torch.searchsorted(srt, lo.reshape(1), right=True)[0] - below
        out.append(Found(lo, hi, below, equal, ok=torch.ones((), dtype=torch.bool, device=x.device)))
    return out


# ---- brackets (0-d or per-row float64 device tensors) ----------------------------------------

_FIELDS = ("lo", "hi", "center", "guess")


@dataclass
class _Bracket:
    lo: torch.Tensor
    hi: torch.Tensor
    center: torch.Tensor
    # where this call first expected the k-th smallest (from the hint), kept through retries so that
    # the next hint learns how far the weights really drift in a step (NaN: a sample's guess, whose
    # error is sampling noise, not drift)
    guess: torch.Tensor


def _sample_bracket(q: Query, group) -> _Bracket:
    """A first bracket from a strided sample: its quantile at k/n, +- 4 standard errors of the rank."""
    x = q.x.detach().reshape(-1)
    step = max(1, x.numel() // SAMPLE)
    sample = x[::step][:SAMPLE].abs().double()
    real = sample.numel()
    if group is not None:  # every rank must start from the same bracket (cold start only)
        real = int(S.all_reduce(torch.tensor([float(real)], dtype=torch.float64, device=x.device), group).item())
        padded = torch.nn.functional.pad(sample, (0, SAMPLE - sample.numel()), value=math.inf)
        sample = S.all_gather_fixed(padded, group).reshape(-1)
    s = sample.sort().values
    p = q.k / q.n
    r = min(real, max(1, round(p * real)))
    se = max(1.0, math.sqrt(real * p * (1 - p)))
    lo, center, hi = s[max(1, r - math.ceil(4 * se)) - 1], s[r - 1], s[min(real, r + math.ceil(4 * se)) - 1]
    pad = torch.clamp(center.abs() * 1e-3, min=1e-30)  # a sample of ties gives lo == hi: look around them
    same = hi <= lo
    return _Bracket(torch.where(same, torch.clamp(center - pad, min=0.0), lo), torch.where(same, center + pad, hi),
                    center, torch.full_like(center, math.nan))


def _hint_brackets(hints: list[Hint], ks: list[int], device, plan: Plan) -> _Bracket:
    """Per-row brackets from last step's hints: shifted by the change of k at the density found
    there, and wide enough for how far the last step's guess missed (the weights' drift, and the
    error of that shift during a sparsity ramp: both carry over from step to step)."""
    value = torch.stack([h.value for h in hints])
    density = torch.stack([h.density for h in hints])
    miss = torch.stack([h.miss for h in hints])
    kk = _vec(ks, device)
    dk = kk - _vec([h.k for h in hints], device)
    known = density > 0
    d = torch.where(known, density, 1.0)
    center = torch.where(known, value + dk / d, value)
    half = torch.maximum(3 * miss, torch.where(known, plan.aim / (2 * d), value.abs() * 1e-3))
    b = _clamped(center, half, center)
    if any(h.window is None for h in hints):
        return b
    # by rank: last step's entries at ranks k - aim/2 .. k + aim/2 (for the new k), widened by the drift
    width = max(h.window.numel() for h in hints)
    win = torch.stack([torch.nn.functional.pad(h.window, (0, width - h.window.numel()), value=math.inf)
                       for h in hints])
    at = (kk - torch.stack([h.window_below for h in hints]) - 1).to(torch.int64)  # index of rank k
    half_rank = plan.aim // 2
    lo_i, hi_i = at - half_rank, at + half_rank + 1
    inside = (lo_i >= 0) & (hi_i < (win < math.inf).sum(1))
    last = width - 1
    lo_w = win.gather(1, lo_i.clamp(0, last)[:, None])[:, 0] - 3 * miss
    hi_w = win.gather(1, hi_i.clamp(0, last)[:, None])[:, 0] + 3 * miss
    mid = win.gather(1, at.clamp(0, last)[:, None])[:, 0]
    return _Bracket(torch.where(inside, torch.clamp(lo_w, min=0.0), b.lo), torch.where(inside, hi_w, b.hi),
                    torch.where(inside, mid, b.center), torch.where(inside, mid, b.guess))


def _clamped(center, half, guess) -> _Bracket:
    half = torch.maximum(half, torch.clamp(center.abs() * 1e-7, min=1e-30))
    return _Bracket(torch.clamp(center - half, min=0.0), center + half, center, guess)


def _next_bracket(b: _Bracket, k, n, below, inside, aim: int) -> _Bracket:
    """After a miss: move past the side the pair lies on, or narrow around it by interpolation.
    Everything elementwise, so it serves one row (0-d) or a batch."""
    width = b.hi - b.lo
    d = torch.where((inside > 0) & (width > 0), inside / torch.where(width > 0, width, 1.0), 0.0)
    safe_d = torch.where(d > 0, d, 1.0)
    grow = torch.clamp(width, min=1e-30)
    shift_dn = torch.where(d > 0, (below - k + 1) / safe_d, 2 * grow)  # the pair lies below lo
    shift_up = torch.where(d > 0, (k + 1 - below - inside) / safe_d, 2 * grow)  # above hi
    is_dn = below >= k
    is_up = below + inside < torch.minimum(k + 1, n)
    frac = ((k - below) - 0.5) / torch.clamp(inside, min=1.0)  # inside, but too many candidates
    center = torch.where(is_dn, b.lo - shift_dn, torch.where(is_up, b.hi + shift_up, b.lo + frac * width))
    near = torch.where(d > 0, aim / (2 * safe_d), width / 4)
    # past a side: the density found inside extrapolates worse the further it reaches, so allow
    # half the distance again (and without a density, grow the bracket)
    half = torch.where(is_dn, torch.where(d > 0, near + shift_dn / 2, shift_dn),
                       torch.where(is_up, torch.where(d > 0, near + shift_up / 2, shift_up), near))
    return _clamped(center, half, b.guess)


def _start(queries, todo, start, group, device, plan: Plan) -> _Bracket:
    """The round's brackets, one row per query: from hints (vectorized), earlier rounds, or samples."""
    if all(isinstance(start[i], Hint) for i in todo):
        return _hint_brackets([start[i] for i in todo], [queries[i].k for i in todo], device, plan)
    bs = []
    for i in todo:
        s = start[i]
        if isinstance(s, Hint):
            s = _hint_brackets([s], [queries[i].k], device, plan)
        elif s is None:
            s = _sample_bracket(queries[i], group)
        bs.append(s)
    return _Bracket(*(torch.stack([getattr(b, f).reshape(()) for b in bs]) for f in _FIELDS))


# ---- one round: count, collect, pick ------------------------------------------------------------


def _batches(queries, idx):
    """Positions in ``idx`` selected together (module docstring: stacked on CUDA, one by one on CPU)."""
    batches: dict = {}
    for pos, i in enumerate(idx):
        x = queries[i].x
        key = (x.dtype, x.numel(), x.device) if x.device.type == "cuda" else (pos,)
        batches.setdefault(key, []).append(pos)
    return list(batches.values())


def _round(queries, todo, start, group, kernels) -> dict:
    """Count, collect and pick for every query in ``todo``: i -> (Found with .ok, next bracket thunk).

    The brackets, the pick and the verdicts are vectorized over every query of the round; the
    counting pass and the collection run per batch (per tensor on CPU).  Under shards the round
    makes one all-reduce (the counts) and one all-gather (the candidates), however many queries."""
    dev = queries[todo[0]].x.device
    plan = plan_for(dev, kernels)
    if group is not None and plan.compact:  # candidates cross ranks in fixed-size messages
        plan = plan_for(dev, _Fixed())
    b = _start(queries, todo, start, group, dev, plan)
    ks, ns = [queries[i].k for i in todo], [queries[i].n for i in todo]
    kk, nn_ = _vec(ks, dev), _vec(ns, dev)
    k1 = torch.minimum(kk + 1, nn_)
    cold = any(start[i] is None for i in todo)
    batches = _batches(queries, todo)
    order = [p for pos in batches for p in pos]
    in_order = order == sorted(order)  # always on CPU (one query per batch, in turn)

    def rows_of(t, pos):
        if pos == list(range(pos[0], pos[0] + len(pos))):
            return t[pos[0]:pos[0] + len(pos)]  # a view
        return t.index_select(0, torch.tensor(pos, device=dev))

    def in_todo_order(parts):
        if parts[0].dim() == 2 and len({t.shape[1] for t in parts}) > 1:  # candidates of unequal width
            width = max(t.shape[1] for t in parts)
            parts = [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=math.inf) for t in parts]
        out = torch.cat(parts) if len(parts) > 1 else parts[0]
        if in_order:
            return out
        inv = torch.tensor(sorted(range(len(order)), key=order.__getitem__), device=dev)
        return out.index_select(0, inv)

    counted = []
    for pos in batches:
        xs = [queries[todo[p]].x for p in pos]
        bb = _Bracket(*(rows_of(getattr(b, f), pos) for f in _FIELDS))
        counted.append(_Batch(xs, bb, rows_of(kk, pos), rows_of(nn_, pos), rows_of(k1, pos), group, kernels,
                              cold, plan))
    c = S.all_reduce(in_todo_order([cb.c for cb in counted]), group)  # every row's counts in one call
    if not plan.compact:  # "over": more candidates than one collection keeps
        c[:, 2] = ((c[:, 2] > 0) | (c[:, 1] > plan.cand)).double()
    srt = in_todo_order([cb.collect() for cb in counted])
    if group is not None:  # every rank's candidates side by side, in one call
        srt = S.all_gather_fixed(srt, group).permute(1, 0, 2).reshape(len(todo), -1).sort(dim=1).values
    b = _Bracket(*(in_todo_order([getattr(cb.b, f) for cb in counted]) for f in _FIELDS))
    below, inside, over = c[:, 0], c[:, 1], c[:, 2]
    last = max(srt.shape[1] - 1, 0)
    if srt.shape[1] == 0:  # no row had a candidate (compact): every row missed
        srt = torch.full((len(todo), 1), math.inf, dtype=srt.dtype, device=dev)
    j = (kk - below).to(torch.int64)
    lo_v = srt.gather(1, (j - 1).clamp(0, last)[:, None])[:, 0]
    hi_v = srt.gather(1, torch.where(kk < nn_, j, j - 1).clamp(0, last)[:, None])[:, 0]
    below_k = below.to(torch.int64) + (srt < lo_v[:, None]).sum(1)
    equal = (srt == lo_v[:, None]).sum(1)
    ok = (over == 0) & (below <= kk - 1) & (below + inside >= k1)
    span = b.hi - b.lo
    dens = torch.where(span > 0, inside / torch.where(span > 0, span, 1.0), 0.0)
    value = lo_v.double()
    miss = torch.where(b.guess.isnan(), 0.0, (value - b.guess).abs())
    window = srt.double()
    out = {}
    for r, i in enumerate(todo):
        dt = queries[i].x.dtype
        f = Found(lo_v[r].to(dt), hi_v[r].to(dt), below_k[r], equal[r],
                  Hint(ks[r], value[r], dens[r], miss[r], window[r], below[r]), ok=ok[r])

        def retry(r=r):  # only after a miss: the next bracket from this round's counts
            return _next_bracket(_Bracket(*(getattr(b, f)[r] for f in _FIELDS)), kk[r], nn_[r], below[r], inside[r],
                                 plan.aim)

        out[i] = (f, retry)
    return out


class _Fixed:
    collect = "fixed"


class _Batch:
    """Rows of equal length (one tensor on CPU; tensors of one size, stacked, on CUDA): this process's
    counts for a bracket per row, then its candidates.  ``b``: the bounds as compared (x's dtype,
    back in float64); ``c``: (rows, 3) local counts below, inside, and whether too many blocks
    held candidates (always 0 when collecting compactly)."""

    def __init__(self, xs, b: _Bracket, kk, nn_, k1, group, kernels, cold: bool, plan: Plan):
        rows = len(xs)
        x = torch.stack([t.detach().reshape(-1) for t in xs]) if rows > 1 else xs[0].detach().reshape(1, -1)
        self.dtype, self.kernels, self.plan = x.dtype, kernels, plan
        n_body = x.shape[1] - x.shape[1] % SB
        self.body, self.tail = x[:, :n_body].reshape(rows, -1, SB), x[:, n_body:].abs()
        self._count(b)
        if cold:  # a sample's bracket holds far too many: narrow once on the device before reading anything
            c = S.all_reduce(self.c, group)
            fits = (c[:, 2] == 0) & (c[:, 0] <= kk - 1) & (c[:, 0] + c[:, 1] >= k1)
            if not plan.compact:
                fits &= c[:, 1] <= plan.cand
            nb = _next_bracket(self.b, kk, nn_, c[:, 0], c[:, 1], plan.aim)
            self._count(_Bracket(*(torch.where(fits, getattr(self.b, f), getattr(nb, f)) for f in _FIELDS)))

    def _count(self, b: _Bracket) -> None:
        from pdp_gpt2.pdp.kernels.fused import row_block_counts

        lo, hi = b.lo.to(self.dtype), b.hi.to(self.dtype)  # the bounds as compared, in x's dtype
        below_b, self.inside_b = row_block_counts(self.body, lo, hi, self.kernels)
        below, inside = below_b.sum(1, dtype=torch.float64), self.inside_b.sum(1, dtype=torch.float64)
        if self.tail.shape[1]:
            below = below + (self.tail < lo[:, None]).sum(1)
            inside = inside + ((self.tail >= lo[:, None]) & (self.tail <= hi[:, None])).sum(1)
        if self.plan.compact:
            over = torch.zeros_like(below)
        else:
            over = ((self.inside_b > 0).sum(1) > self.plan.blocks).double()
        self.lo, self.hi = lo, hi
        self.b = _Bracket(lo.double(), hi.double(), b.center, b.guess)
        self.c = torch.stack([below, inside, over], dim=1)

    def collect(self) -> torch.Tensor:
        """The entries inside each row's bracket, ascending, +inf-padded to one width: all of them
        (compact), or the ``cand`` smallest, which is all of them unless the counts say "over"."""
        if self.plan.compact:
            return self._compact()
        rows, nblk = self.inside_b.shape
        vals = self.tail
        take = min(self.plan.blocks, nblk)
        if take:  # the blocks with most candidates
            top = self.inside_b.topk(take, dim=1).indices
            if rows > 1:  # as row-major block numbers: one index_select copies whole blocks (a gather is slower)
                top = top + torch.arange(rows, device=top.device)[:, None] * nblk
            vals = self.body.reshape(-1, SB).index_select(0, top.reshape(-1)).abs().reshape(rows, -1)
            if self.tail.shape[1]:
                vals = torch.cat([vals, self.tail], dim=1)
        cand = torch.where((vals >= self.lo[:, None]) & (vals <= self.hi[:, None]), vals, math.inf)
        srt = cand.topk(min(self.plan.cand, cand.shape[1]), dim=1, largest=False).values
        return torch.nn.functional.pad(srt, (0, self.plan.cand - srt.shape[1]), value=math.inf)

    def _compact(self) -> torch.Tensor:
        out = []
        for r in range(self.inside_b.shape[0]):
            blocks = self.inside_b[r].nonzero().squeeze(1)
            vals = torch.cat([self.body[r].index_select(0, blocks).abs().reshape(-1), self.tail[r]])
            out.append(vals[(vals >= self.lo[r]) & (vals <= self.hi[r])].sort().values)
        width = max(v.numel() for v in out)
        return torch.stack([torch.nn.functional.pad(v, (0, width - v.numel()), value=math.inf) for v in out])


def _vec(values: list, device) -> torch.Tensor:
    """A host list as a float64 device vector, without waiting for the device (pinned, async on CUDA)."""
    t = torch.tensor(values, dtype=torch.float64)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def _radix(q: Query, group) -> Found:
    """The exact fallback: radix selection on the float bit patterns (pdp/kernels/sharded.py)."""
    ranks = [q.k, min(q.k + 1, q.n)]
    (v1, below, equal), (v2, _, _) = S.radix_select([([S.keys(q.x)], ranks)], group)[0]
    dev = q.x.device
    return Found(S.key_value(v1, q.x.dtype, dev), S.key_value(v2, q.x.dtype, dev),
                 torch.tensor(below, device=dev), torch.tensor(equal, device=dev),
                 ok=torch.ones((), dtype=torch.bool, device=dev))


# ---- hard keep-masks --------------------------------------------------------------------------


def keep_masks(queries: list[Query], group=None, kernels=None) -> list[torch.Tensor]:
    """Boolean keep-masks, each the shape of its query's ``x``, pruning the k smallest scores of the
    global vector; of the entries equal to the k-th, the lowest flat indices go first (ranks in
    order).  ``mask.hard_mask_from_scores``, bit for bit, with the same host transfers as
    :func:`select` (plus one collective for tie counts under shards when ties must be split)."""
    out: list = [None] * len(queries)
    real = []
    for i, q in enumerate(queries):
        if q.k <= 0:
            out[i] = torch.ones_like(q.x, dtype=torch.bool)
        elif q.k >= q.n:
            out[i] = torch.zeros_like(q.x, dtype=torch.bool)
        else:
            real.append(i)
    sub = [queries[i] for i in real]
    found, host = select(sub, group, kernels,
                         flags=lambda j, f: [f.below + f.equal > sub[j].k, f.lo.isnan()])
    for i, q, f, (split, nan) in zip(real, sub, found, host):
        a = q.x.detach().abs()
        if nan:  # pruning into the NaNs (a sort puts them last): rare, take the definition
            if group is not None:
                raise ValueError("cannot prune into NaN scores of a sharded tensor")
            from pdp_gpt2.pdp.kernels.mask import hard_mask_from_scores

            out[i] = hard_mask_from_scores(a, q.k)
            continue
        keep = ~(a <= f.lo)  # not a > lo: a NaN is kept, as a sort puts it last
        if split:  # some entries equal to the k-th stay: the first (k - below) by index go
            ties = (a == f.lo).reshape(-1)
            rank = ties.cumsum(0) + S.before_me(ties.sum(), group)
            keep = keep | (ties & (rank > (q.k - f.below))).view_as(a)
        out[i] = keep
    return out
