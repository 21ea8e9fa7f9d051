"""The pattern contract: :class:`Part` (what a process holds of one target weight) and
:class:`Pattern` (how many units a sparsity means, their scores, PDP's thresholds and soft mask,
the exact hard keep-mask, and each on a shard under FSDP2).

Drivers never branch on the pattern or on sharding; they hand it :class:`Part` objects, batched
over every target. Every method takes the weight as stored plus ``out_dim``, the axis of output
channels (0 for nn.Linear's (out, in), 1 for GPT-2's Conv1D (in, out)). A new pattern is one
subclass with four methods (``num_pruned``, ``scores``, ``soft_mask``, ``expand``); on a shard
the default gathers the weight, and a pattern whose units lie within a shard overrides ``local_*``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import select as SEL
from pdp_gpt2.pdp.kernels import sharded as S


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
    help = ""  # one line for --pattern's help (the registry lists it); default: the name alone
    # The sparsity a run takes when none is given (the CLI's default); N:M fixes its own.
    default_sparsity = 0.9
    # Units span several tensors (pdp/patterns/coupled.py): the driver groups the targets first.
    coupled = False

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
        steady state the whole call reads the device once (pdp/kernels/select.py)."""
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
