"""The built-in per-tensor patterns: each entry on its own, the output rows of a tensor, and N:M groups."""
from __future__ import annotations

import re

import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import sharded as S
from pdp_gpt2.pdp.kernels.fused import soft_masked_weight
from pdp_gpt2.pdp.kernels.mask import from_in_last, in_last
from pdp_gpt2.pdp.patterns.base import Part, Pattern, Scores, _numel


def _row_width(part: Part) -> int:
    """Entries of one dim-0 row of the whole weight."""
    return _numel(part.shape[1:])


class Unstructured(Pattern):
    """Each entry on its own: exactly floor(r n) zeros per tensor.  Every entry is on one rank."""

    name = "unstructured"
    help = "each entry on its own (exactly floor(r n) zeros per tensor)"

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
    """Each tensor's output rows on their own, ranked by their L2 norm.  Linear's rows are whole on each rank;
    Conv1D's output neurons are columns split across ranks, so their norms come from the gathered
    weight (a sum of per-shard sums would round differently)."""

    name = "row"
    help = ("each tensor's output rows on their own, ranked by their L2 norm (a pruned row's bias and "
            "the next layer's weights stay: zeros, not a smaller model; see 'neurons')")

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
    help = "at most M - N zeros in every M consecutive inputs, such as '2:4' (sparsity (M - N) / M)"

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
