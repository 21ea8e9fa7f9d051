"""Sparsity patterns: which entries of a weight are pruned together.

A :class:`Pattern` owns everything that depends on the shape of what is pruned: how many units a
sparsity means, the score each unit is ranked by, PDP's thresholds and soft mask, the exact hard
keep-mask, and how each runs on a shard (FSDP2). Drivers never branch on the pattern or on
sharding; they hand it :class:`Part` objects, batched over every target. Every method takes the
weight as stored plus ``out_dim``, the axis of output channels (0 for nn.Linear's (out, in), 1 for
GPT-2's Conv1D (in, out)).

Adding a pattern is one subclass with four methods (``num_pruned``, ``scores``, ``soft_mask``,
``expand``) and one line in :data:`PATTERNS` (docs/architecture.md has a toy); on a shard the
default gathers the weight, and a pattern whose units lie within a shard overrides the ``local_*``
methods. :func:`get_pattern` parses a spec string such as "2:4".
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp import select as SEL
from pdp_gpt2.pdp import sharded as S
from pdp_gpt2.pdp.fused import soft_masked_weight
from pdp_gpt2.pdp.targets import from_in_last, in_last


def _numel(shape) -> int:
    return math.prod(int(s) for s in shape)


@dataclass
class Part:
    """One target weight as a pattern sees it: what this process holds of it (the whole tensor,
    or under FSDP2 its shard's rows), the axis of output channels, and where the shard sits."""

    w: torch.Tensor
    out_dim: int
    shard: S.Layout | None = None

    @property
    def shape(self) -> torch.Size:
        return self.shard.shape if self.shard is not None else self.w.shape

    @property
    def group(self):
        return self.shard.group if self.shard is not None else None

    def full(self) -> torch.Tensor:
        """The whole tensor (gathered from the shards: for units that straddle them)."""
        return self.w if self.shard is None else S.gather_dim0(self.w, self.shard)

    def mine(self, full: torch.Tensor) -> torch.Tensor:
        """This process's rows of a tensor laid out like the whole weight."""
        return full if self.shard is None else S.my_rows(full, self.shard)


@dataclass
class Scores:
    """What is ranked for one part: ``x`` (this process's scores, ``abs`` is taken), the global
    count ``n``, and under shards the length every rank pads a short vector to (0: not sharded)."""

    x: torch.Tensor
    n: int
    width: int = 0

    @property
    def sharded(self) -> bool:
        return self.width > 0


class Pattern:
    """The base of every pattern.  Its defaults treat each entry on its own; a pattern with
    groups or rows overrides ``num_pruned``, ``scores``, ``soft_mask`` and ``expand``."""

    name = "pattern"
    # The sparsity a run takes when none is given (the CLI's default); N:M fixes its own.
    default_sparsity = 0.9

    @classmethod
    def parse(cls, spec: str) -> Pattern | None:
        """An instance if ``spec`` names this pattern, else None (may raise UsageError on a bad spec)."""
        return cls() if spec == cls.name else None

    def check(self, sparsity: float, allocation: str) -> None:
        """Raise UsageError if this pattern cannot give ``sparsity`` under ``allocation``."""

    def check_shape(self, name: str, shape, out_dim: int) -> None:
        """Raise UsageError if this pattern cannot prune weight ``name`` of ``shape`` (checked before any work)."""

    # ---- counting and scores ------------------------------------------------------------------
    def num_pruned(self, shape, out_dim: int, sparsity: float) -> int:
        """k: how many units (entries, rows, entries per group) are pruned at ``sparsity``."""
        return M.num_pruned(_numel(shape), sparsity)

    def scores(self, w: torch.Tensor, out_dim: int) -> torch.Tensor:
        """One non-negative score per unit of a whole weight, broadcastable to it: |w| by default."""
        return w.abs()

    def expand(self, keep_units: torch.Tensor, shape, out_dim: int) -> torch.Tensor:
        """A keep-mask over units (``scores``' shape) as a keep-mask over entries (``shape``)."""
        return keep_units.expand(shape)

    # ---- on a shard: defaults gather the whole weight (exact for any pattern) --------------------
    def local_scores(self, part: Part) -> Scores:
        """The scores this process ranks for ``part``.  Default: the whole tensor's (gathered)."""
        sc = self.scores(part.full(), part.out_dim)
        return Scores(sc, sc.numel())

    def local_expand(self, keep_units: torch.Tensor, part: Part) -> torch.Tensor:
        """``expand`` for this process's rows (``keep_units`` as ``local_scores`` laid them out)."""
        return part.mine(self.expand(keep_units, part.shape, part.out_dim))

    def local_soft_mask(self, part: Part, t, tau: float, tau_mode: str, beta) -> torch.Tensor:
        """``soft_mask``'s values on this process's rows, expanded to them."""
        full = part.full()
        return part.mine(self.soft_mask(full, part.out_dim, t.to(full.dtype), tau, tau_mode, beta).expand_as(full))

    def local_threshold(self, t: torch.Tensor, part: Part) -> torch.Tensor:
        """The thresholds that apply to this process's rows (all of them unless they are per group)."""
        return t

    # ---- thresholds and the soft mask (PDP) -------------------------------------------------
    def threshold_shape(self, shape, out_dim: int) -> tuple:
        """Shape of the threshold buffer: one number unless the pattern has groups."""
        return ()

    def thresholds(self, parts: list[Part], ks: list[int], hints: list, kernels=None):
        """Thresholds of many weights at once: (thresholds, hints for the next call, whether each
        threshold is positive, as host bools).  Each threshold is ``mask.threshold(scores, k)`` bit
        for bit, a 0-d tensor in the scores' dtype; a hint only speeds the next call up.  In a
        steady state the whole call reads the device once (pdp/select.py)."""
        ts: list = [None] * len(parts)
        new_hints: list = [None] * len(parts)
        positive = [False] * len(parts)
        by_group: dict = {}
        for i, (p, k) in enumerate(zip(parts, ks)):
            if k <= 0:  # nothing pruned: threshold 0, as mask.threshold says
                ts[i] = torch.zeros((), dtype=p.w.dtype, device=p.w.device)
                continue
            sc = self.local_scores(p)
            q = SEL.Query(sc.x, min(k, sc.n), sc.n, hints[i], sc.width)
            by_group.setdefault(p.group if sc.sharded else None, []).append((i, q))
        for group, items in by_group.items():
            queries = [q for _, q in items]
            mids: list = [None] * len(items)

            def midpoint(j, f, queries=queries, mids=mids):
                # mask.threshold: the midpoint of the k-th and (k+1)-th smallest; the largest when k = n
                mids[j] = f.lo if queries[j].k >= queries[j].n else (f.lo + f.hi) / 2
                return [mids[j] > 0]  # read with the selection's own verdicts, in its one transfer

            found, host = SEL.select(queries, group, kernels, midpoint)
            for (i, _), f, mid, (pos,) in zip(items, found, mids, host):
                ts[i], new_hints[i], positive[i] = mid, f.hint, pos
        return ts, new_hints, positive

    def soft_mask(self, w, out_dim: int, t, tau: float, tau_mode: str, beta) -> torch.Tensor:
        """The soft mask for thresholds ``t`` (differentiable in w), broadcastable to w."""
        return M.mask_from_gap(M.normalized_gap(w * w, t, tau_mode), tau, beta)

    def masked_weight(self, w, out_dim: int, t, tau: float, tau_mode: str, beta, kernels) -> torch.Tensor:
        """w * soft_mask(w), as the forward computes it (``kernels``: fused.KernelOptions)."""
        return w * self.soft_mask(w, out_dim, t, tau, tau_mode, beta)

    # ---- the hard mask -----------------------------------------------------------------------
    def keeps(self, parts: list[Part], ks: list[int], kernels=None) -> list[torch.Tensor]:
        """Boolean keep-masks (each part's local shape) pruning the k lowest-scoring units of each
        whole weight, ties by unit index (``mask.hard_mask_from_scores`` on the scores), batched."""
        out: list = [None] * len(parts)
        by_group: dict = {}
        for i, (p, k) in enumerate(zip(parts, ks)):
            sc = self.local_scores(p)
            by_group.setdefault(p.group if sc.sharded else None, []).append((i, SEL.Query(sc.x, k, sc.n,
                                                                                       width=sc.width)))
        for group, items in by_group.items():
            for (i, q), keep in zip(items, SEL.keep_masks([q for _, q in items], group, kernels)):
                out[i] = self.local_expand(keep, parts[i])
        return out

    def keep_is_nonzero(self, shape, out_dim: int, k: int, nonzero: int) -> bool:
        """True only if ``keep(scores, k)`` is certainly ``scores != 0`` when ``nonzero`` of the
        scores are nonzero: a cheap test (no selection) that a magnitude mask whose pruned units
        score 0 would not change.  False means "don't know" (the safe default)."""
        return False

    # ---- one whole tensor (the definitions' shape of call) -------------------------------------
    def threshold(self, w: torch.Tensor, out_dim: int, k: int) -> torch.Tensor:
        return self.thresholds([Part(w, out_dim)], [k], [None])[0][0]

    def keep(self, scores: torch.Tensor, out_dim: int, k: int) -> torch.Tensor:
        """Boolean keep-mask (``scores``' shape) pruning the k lowest-scoring units, ties by index."""
        return self.keeps([Part(scores, out_dim)], [k])[0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _row_width(part: Part) -> int:
    """Entries of one dim-0 row of the whole weight."""
    return _numel(part.shape[1:])


class Unstructured(Pattern):
    """Each entry on its own: exactly floor(r n) zeros per tensor.  Every entry is on one rank."""

    name = "unstructured"

    def local_scores(self, part):
        if part.shard is None:
            return Scores(part.w, part.w.numel())
        return Scores(part.w, _numel(part.shape), part.shard.chunk * _row_width(part))

    def local_expand(self, keep_units, part):
        return keep_units

    def local_soft_mask(self, part, t, tau, tau_mode, beta):
        return self.soft_mask(part.w, part.out_dim, t.to(part.w.dtype), tau, tau_mode, beta)

    def masked_weight(self, w, out_dim, t, tau, tau_mode, beta, kernels):
        return soft_masked_weight(w, t, tau, tau_mode, beta, kernels)  # one pass per direction

    def keep_is_nonzero(self, shape, out_dim, k, nonzero):
        # exactly k zero scores and every other positive: the k smallest are the zeros
        return nonzero == _numel(shape) - k


class Row(Pattern):
    """Whole output neurons, ranked by their L2 norm.  Linear's rows are whole on each rank;
    Conv1D's output neurons are columns split across ranks, so their norms come from the gathered
    weight (a sum of per-shard sums would round differently)."""

    name = "row"

    def num_pruned(self, shape, out_dim, sparsity):
        return M.num_pruned(int(shape[out_dim]), sparsity)

    @staticmethod
    def _row_sq(x: torch.Tensor, out_dim: int) -> torch.Tensor:
        """Squared L2 norm of each output neuron, shaped to broadcast against x."""
        return (x * x).sum(dim=1 - out_dim, keepdim=True)

    def scores(self, w, out_dim):
        return self._row_sq(w, out_dim).sqrt()

    def soft_mask(self, w, out_dim, t, tau, tau_mode, beta):
        return M.mask_from_gap(M.normalized_gap(self._row_sq(w, out_dim), t, tau_mode), tau, beta)

    def _local(self, part: Part) -> bool:
        return part.shard is not None and part.out_dim == 0

    def local_scores(self, part):
        if not self._local(part):
            return super().local_scores(part)
        return Scores(self.scores(part.w, 0), int(part.shape[0]), part.shard.chunk)

    def local_expand(self, keep_units, part):
        if not self._local(part):
            return super().local_expand(keep_units, part)
        return keep_units.expand_as(part.w)

    def local_soft_mask(self, part, t, tau, tau_mode, beta):
        if part.shard is None or self._local(part):
            w = part.w
            return self.soft_mask(w, part.out_dim, t.to(w.dtype), tau, tau_mode, beta).expand_as(w)
        return super().local_soft_mask(part, t, tau, tau_mode, beta)


class NM(Pattern):
    """N:M: at most M - N of every M consecutive weights along the input dimension.  Every group
    lies on one rank (``sharded.check_nm``), so the thresholds and keeps are local math."""

    name = "N:M"

    def __init__(self, n: int, m: int):
        self.n, self.m = n, m
        self.name = f"{n}:{m}"

    @classmethod
    def parse(cls, spec):
        nm = parse_nm(spec)
        if nm is None:
            return None
        if not (0 < nm[0] < nm[1]):
            raise UsageError(f"pattern {spec!r} needs 0 < N < M")
        return cls(*nm)

    @property
    def default_sparsity(self) -> float:
        return (self.m - self.n) / self.m

    def check(self, sparsity, allocation):
        r = self.default_sparsity
        if abs(sparsity - r) > 1e-9:
            raise UsageError(f"pattern {self.name} means sparsity {r:g}, got {sparsity:g}; pass sparsity={r:g}")
        if allocation == "global":
            raise UsageError(f"allocation 'global' does not apply to the fixed N:M pattern {self.name}")

    def check_shape(self, name, shape, out_dim):
        n_in = int(shape[1 - out_dim])  # groups run along the input dimension, whatever the layout
        if n_in % self.m:
            raise UsageError(f"pattern {self.name}: {name}.weight has {n_in} inputs, not a multiple of M={self.m} "
                             f"(the groups of {self.m} run along the input dimension); choose an M that divides it")

    def num_pruned(self, shape, out_dim, sparsity):
        # The schedule ramps r from 0 to (M-N)/M: prune floor(r*M) per group, never more than M-N.
        return min(self.m - self.n, M.num_pruned(self.m, sparsity))

    def threshold_shape(self, shape, out_dim):
        return (_numel(shape) // self.m, 1)

    def thresholds(self, parts, ks, hints, kernels=None):
        ts = []
        for p, k in zip(parts, ks):
            if p.shard is not None:
                S.check_nm(p.shard, p.out_dim, self.m)
            t = M.nm_threshold(in_last(p.w.detach(), p.out_dim), k, self.m)
            ts.append(t if p.shard is None else self._gather(t, p))
        positive = [bool(v) for v in torch.stack([(t > 0).any() for t in ts]).tolist()] if ts else []
        return ts, [None] * len(parts), [k > 0 and pos for k, pos in zip(ks, positive)]

    def _gather(self, t: torch.Tensor, p: Part) -> torch.Tensor:
        """Every rank's group thresholds, in the order of the whole weight's groups (shape (groups, 1))."""
        lay = p.shard
        if p.out_dim == 0:  # (rows, in): my groups are rows row0.. of the (out, in / M) group grid
            return S.gather_dim0(t.view(lay.rows, -1), lay).reshape(-1, 1)
        out = lay.shape[1]  # (in, out) -> groups of (out, in / M); mine are columns row0 / M ..
        grid = S.gather_dim0(t.view(out, -1).t().contiguous(), lay, per=self.m)
        return grid.t().reshape(-1, 1)

    def local_threshold(self, t, part):
        if part.shard is None:
            return t
        lay, per = part.shard, self.m
        if part.out_dim == 0:
            return t.view(lay.shape[0], -1)[lay.row0:lay.row0 + lay.rows].reshape(-1, 1)
        return t.view(lay.shape[1], -1)[:, lay.row0 // per:(lay.row0 + lay.rows) // per].reshape(-1, 1)

    def soft_mask(self, w, out_dim, t, tau, tau_mode, beta):
        m = M.nm_soft_mask(in_last(w, out_dim), t, self.m, tau, beta=beta, tau_mode=tau_mode)
        return from_in_last(m, out_dim)

    def local_soft_mask(self, part, t, tau, tau_mode, beta):
        w = part.w
        return self.soft_mask(w, part.out_dim, self.local_threshold(t, part).to(w.dtype), tau, tau_mode, beta)

    def keeps(self, parts, ks, kernels=None):
        out = []
        for p, k in zip(parts, ks):
            if p.shard is not None:
                S.check_nm(p.shard, p.out_dim, self.m)
            out.append(from_in_last(M.nm_hard_mask(in_last(p.w, p.out_dim), k, self.m), p.out_dim))
        return out


def parse_nm(pattern: str) -> tuple[int, int] | None:
    """'2:4' -> (2, 4); anything else -> None."""
    m = re.fullmatch(r"(\d+):(\d+)", pattern.strip())
    return (int(m.group(1)), int(m.group(2))) if m else None


# The registry: display name -> class.  Adding a pattern = one class + one line here.
PATTERNS: dict[str, type[Pattern]] = {"unstructured": Unstructured, "row": Row, "N:M": NM}


def get_pattern(spec: str) -> Pattern:
    """The pattern a spec string names ('unstructured', 'row', '2:4', ...); UsageError if none does."""
    for cls in PATTERNS.values():
        p = cls.parse(spec)
        if p is not None:
            return p
    names = ", ".join(f"'{k}'" for k in PATTERNS)
    raise UsageError(f"unknown pattern {spec!r}: use one of {names} (N:M such as '2:4')")
