"""Sparsity patterns: which entries of a weight are pruned together.

A :class:`Pattern` owns everything that depends on the shape of what is pruned:
how many units a sparsity means (counting), the threshold(s) PDP reads off the
weight, the soft mask for those thresholds, and the exact hard keep-mask that
finalize and the hard-mask baselines use.  The drivers (attach.py, baselines.py)
never branch on the pattern; they call these methods.

Every method takes the weight as stored plus ``out_dim``, the axis of output
channels (0 for nn.Linear's (out, in), 1 for GPT-2's Conv1D (in, out)).

Adding a pattern is one subclass and one line in :data:`PATTERNS` (docs/architecture.md
and tests/test_extension_points.py show a complete toy)::

    class Columns(Pattern):
        name = "columns"
        def num_pruned(self, shape, out_dim, sparsity): ...
        def threshold(self, w, out_dim, k, hint=None, kernels=None): ...
        def soft_mask(self, w, out_dim, t, tau, tau_mode, beta): ...
        def keep(self, scores, out_dim, k): ...
    PATTERNS["columns"] = Columns

A spec string (``PDPConfig.pattern``) names a pattern: :func:`get_pattern` asks
each registered class's :meth:`Pattern.parse` in turn ("2:4" is parsed by N:M).
"""
from __future__ import annotations

import re

import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.fused import soft_masked_weight
from pdp_gpt2.pdp.targets import from_in_last, in_last


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class Pattern:
    """The base of every pattern.  Its defaults treat each entry on its own (counting, threshold,
    keep); a pattern with groups or rows overrides those, and ``soft_mask``."""

    name = "pattern"
    # The sparsity a run takes when none is given (the CLI's default); N:M fixes its own.
    default_sparsity = 0.9

    @classmethod
    def parse(cls, spec: str) -> Pattern | None:
        """An instance if ``spec`` names this pattern, else None (may raise UsageError on a bad spec)."""
        return cls() if spec == cls.name else None

    def check(self, sparsity: float, allocation: str) -> None:
        """Raise UsageError if this pattern cannot give ``sparsity`` under ``allocation``."""

    # ---- counting -----------------------------------------------------------------
    def num_pruned(self, shape, out_dim: int, sparsity: float) -> int:
        """k: how many units (entries, rows, entries per group) are pruned at ``sparsity``."""
        return M.num_pruned(_numel(shape), sparsity)

    # ---- thresholds and the soft mask (PDP) -------------------------------------------------
    def threshold_shape(self, shape, out_dim: int) -> tuple:
        """Shape of the threshold buffer: one number unless the pattern has groups."""
        return ()

    def threshold(self, w: torch.Tensor, out_dim: int, k: int, hint=None, kernels=None):
        """(threshold(s) of ``w`` for k pruned units, hint for the next call on this tensor).

        The hint only speeds the next search up; any hint gives the same threshold.
        """
        return M.abs_threshold(w, k, hint, kernels)

    def soft_mask(self, w, out_dim: int, t, tau: float, tau_mode: str, beta) -> torch.Tensor:
        """The soft mask for thresholds ``t`` (differentiable in w), broadcastable to w."""
        return M.mask_from_gap(M.normalized_gap(w * w, t, tau_mode), tau, beta)

    def masked_weight(self, w, out_dim: int, t, tau: float, tau_mode: str, beta, kernels) -> torch.Tensor:
        """w * soft_mask(w), as the forward computes it (``kernels``: fused.KernelOptions)."""
        return w * self.soft_mask(w, out_dim, t, tau, tau_mode, beta)

    # ---- the hard mask -----------------------------------------------------------------------
    def keep(self, scores: torch.Tensor, out_dim: int, k: int) -> torch.Tensor:
        """Boolean keep-mask (``scores``' shape) pruning the k lowest-scoring units, ties by index."""
        return M.hard_mask_from_scores(scores, k)

    def unchanged(self, scores: torch.Tensor, k: int) -> bool:
        """True only if ``keep(scores, k)`` is certainly ``scores != 0``: a cheap test (no
        selection) that a magnitude mask whose pruned units score 0 would not change.
        False means "don't know" (the safe default); it never changes a result."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class Unstructured(Pattern):
    """Each entry on its own: exactly floor(r n) zeros per tensor."""

    name = "unstructured"

    def masked_weight(self, w, out_dim, t, tau, tau_mode, beta, kernels):
        return soft_masked_weight(w, t, tau, tau_mode, beta, kernels)  # one pass per direction

    def unchanged(self, scores, k):
        # exactly k zero scores and every other positive: the k smallest are the zeros
        return int(torch.count_nonzero(scores)) == scores.numel() - k


class Row(Pattern):
    """Whole output neurons, ranked by their L2 norm."""

    name = "row"

    def num_pruned(self, shape, out_dim, sparsity):
        return M.num_pruned(int(shape[out_dim]), sparsity)

    @staticmethod
    def _row_sq(x: torch.Tensor, out_dim: int) -> torch.Tensor:
        """Squared L2 norm of each output neuron, shaped to broadcast against x."""
        return (x * x).sum(dim=1 - out_dim, keepdim=True)

    def threshold(self, w, out_dim, k, hint=None, kernels=None):
        return M.threshold(self._row_sq(w, out_dim).sqrt(), k), None

    def soft_mask(self, w, out_dim, t, tau, tau_mode, beta):
        return M.mask_from_gap(M.normalized_gap(self._row_sq(w, out_dim), t, tau_mode), tau, beta)

    def keep(self, scores, out_dim, k):
        keep_rows = M.hard_mask_from_scores(self._row_sq(scores, out_dim).reshape(-1), k)
        shape = [1, 1]
        shape[out_dim] = -1
        return keep_rows.view(shape).expand_as(scores).clone()


class NM(Pattern):
    """N:M: at most M - N of every M consecutive weights along the input dimension."""

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

    def num_pruned(self, shape, out_dim, sparsity):
        # The schedule ramps r from 0 to (M-N)/M: prune floor(r*M) per group, never more than M-N.
        return min(self.m - self.n, M.num_pruned(self.m, sparsity))

    def threshold_shape(self, shape, out_dim):
        return (_numel(shape) // self.m, 1)

    def threshold(self, w, out_dim, k, hint=None, kernels=None):
        return M.nm_threshold(in_last(w, out_dim), k, self.m), None

    def soft_mask(self, w, out_dim, t, tau, tau_mode, beta):
        m = M.nm_soft_mask(in_last(w, out_dim), t, self.m, tau, beta=beta, tau_mode=tau_mode)
        return from_in_last(m, out_dim)

    def keep(self, scores, out_dim, k):
        return from_in_last(M.nm_hard_mask(in_last(scores, out_dim), k, self.m), out_dim)


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
