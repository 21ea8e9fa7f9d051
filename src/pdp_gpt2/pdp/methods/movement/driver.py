"""Movement pruning (Sanh, Wolf, Rush, NeurIPS 2020) as a :class:`~pdp_gpt2.pdp.core.driver.MaskDriver`.

Every target weight W gets learned scores S of its shape. Forward: W' = W * M, where M keeps the
highest-scoring entries, exactly floor(r n) pruned at the schedule's sparsity r (ties by index).
Backward, straight-through on the top-k: dL/dW = dL/dW' * M and dL/dS = dL/dW' * W, so a weight
moving away from zero gains score and a pruned one can come back. M is selected after every
optimizer step for every target at once (pdp/kernels/select.py); finalize keeps the top-k of the last scores.
S is an ``nn.Parameter`` of the mask, so the optimizer, checkpoints and DDP carry it unchanged.

The selection ranks magnitudes, and a score's sign matters: :func:`order_keys` maps each score to a
non-negative float that orders exactly like it. Where this departs from the paper's code (no
score learning rate of its own, no soft movement, entrywise patterns only) and why:
docs/results.md, "How the baselines are implemented".
"""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.core.hard import HardMask
from pdp_gpt2.pdp.core.targets import Target
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels import sharded as S
from pdp_gpt2.pdp.patterns import Part

# score dtype -> (its bits as an integer, a float type that holds every unsigned key exactly)
_KEYS = {torch.float32: (torch.int32, torch.float64), torch.bfloat16: (torch.int16, torch.float32),
         torch.float16: (torch.int16, torch.float32)}


def order_keys(scores: torch.Tensor) -> torch.Tensor:
    """Non-negative floats ordered exactly like ``scores`` (-0.0 counts as +0.0, as ``==`` says).

    The bit pattern of a float, read as a b-bit signed integer i, orders like the float for i >= 0
    and in reverse for i < 0; flipping the b-1 low bits of the negative ones (i ^ ((i >> b-1) &
    max)) makes the order right for both, and + 2^(b-1) puts it on [0, 2^b), exact in the wider
    float type (float64 for float32 scores).  Four elementwise passes, no host read."""
    try:
        ints, wide = _KEYS[scores.dtype]
    except KeyError:
        raise TypeError(f"movement scores must be float32, bfloat16 or float16, not {scores.dtype}") from None
    i = (scores.detach() + 0.0).view(ints)  # + 0.0 turns -0.0 into +0.0
    bits = torch.iinfo(ints).bits
    u = i >> (bits - 1)  # all ones for the negatives, 0 for the rest
    u &= (1 << (bits - 1)) - 1
    u ^= i
    key = u.to(wide)
    key += float(1 << (bits - 1))
    return key


class _StraightThrough(torch.autograd.Function):
    """w * keep forward; backward: keep * g to the weight, w * g to the scores (module docstring)."""

    @staticmethod
    def forward(ctx, w, scores, keep):
        ctx.save_for_backward(w, keep)  # keep is saved: autograd refuses a backward after it changed
        return w * keep

    @staticmethod
    def backward(ctx, g):
        w, keep = ctx.saved_tensors
        gw = g * keep if ctx.needs_input_grad[0] else None
        gs = g * w if ctx.needs_input_grad[1] else None
        return gw, gs, None


class MovementMask(HardMask):
    """Parametrization w -> w * keep with learned ``scores`` (an ``nn.Parameter``): HardMask's
    keep-mask buffer, finalize and identity, plus the straight-through gradient to the scores."""

    def __init__(self, weight: torch.Tensor, out_dim: int, bits: int | None = None):
        super().__init__(weight.shape, out_dim, bits)
        if weight.dtype not in _KEYS:  # one line at attach, not a TypeError at the first refresh
            raise UsageError(f"movement pruning needs float32, bfloat16 or float16 weights, not {weight.dtype}")
        self.scores = nn.Parameter(torch.zeros_like(weight, memory_format=torch.contiguous_format))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        out = _StraightThrough.apply(w, self.scores, self.keep)
        return M.fake_quant(out, self.bits, self.out_dim) if self.bits is not None else out


class Movement(MaskDriver):
    """Movement pruning: learned scores, top-k on the schedule, straight-through (module docstring)."""

    description = ("movement pruning (Sanh, Wolf, Rush, NeurIPS 2020) while fine-tuning: scores learned from "
                   "-w * dL/dw through a straight-through top-k mask, sparsity on a schedule, exact zeros at the end")
    # The masks are the top-k of the scores, which are parameters: they come back with the checkpoint.
    keeps_history = True

    # It ranks single weights by their scores: the patterns it takes (entrywise ones) are its
    # MethodSpec's, and attach refuses the others.

    def make_mask(self, t: Target) -> nn.Module:
        bits = self.config.bits if self.config.quantize else None
        return MovementMask(t.module.weight.detach(), t.out_dim, bits)

    def start(self) -> None:
        pass  # starts dense, scores at 0: the schedule's set_sparsity moves it

    def update(self, t: Target, sparsity: float) -> None:
        self.update_all([t], [sparsity])

    def scores_part(self, t: Target) -> Part:
        """Target t's scores as order keys, as this process holds them (the whole tensor or its shard)."""
        s = self.mask_of(t).scores
        if S.is_sharded(s):
            return Part(order_keys(s.to_local()), t.out_dim, S.layout(s))
        return Part(order_keys(s), t.out_dim)

    def group_scores(self, g) -> Part:
        """What is ranked for group g: the target's scores, or per unit of a structure the sum of
        its members' scores (the paper's score of a block), as order keys."""
        if not g.coupled:
            return self.scores_part(g.lead)
        total = None
        for m in g.members:
            s = self.mask_of(m.target).scores.detach()
            per_unit = m.slot.sum(s)
            total = per_unit if total is None else total + per_unit
        return Part(order_keys(total), 0)

    def update_all(self, targets: list[Target], sparsities: list[float]) -> None:
        """Every group's keep-mask from its scores, in one batched selection (one host read in a
        steady state, however many targets; pdp/kernels/select.py)."""
        groups, sparsities = self.groups_of(targets, sparsities)
        todo, parts, ks = [], [], []
        for g, s in zip(groups, sparsities):
            p = self.group_scores(g)
            k = self.pattern.num_pruned(p.shape, p.out_dim, s)
            if k <= 0:  # nothing pruned: no selection
                for m in g.members:
                    self.mask_of(m.target).keep.fill_(True)
                continue
            todo.append(g)
            parts.append(p)
            ks.append(k)
        for g, p, keep in zip(todo, parts, self.pattern.keeps(parts, ks, self.kernels)):
            whole = keep if p.shard is None else S.gather_dim0(keep, p.shard)  # every rank holds all of keep
            for m, k in zip(g.members, self.member_keeps(g, whole)):
                self.mask_of(m.target).keep.copy_(k)
