"""Recompute each masked weight in backward instead of keeping it alive from forward.

Why.  A parametrized weight is computed in forward (``w * m(w)``), then its
consumer (``addmm`` in GPT-2's Conv1D, ``linear`` elsewhere) saves it for
backward, to compute the gradient of its input.  So every masked weight of the
model is alive from its forward to its backward: one extra copy of all target
weights at the peak (340 MB on GPT-2 small).  On CPU that copy is also slow:
glibc hands the memory back to the kernel after each step and the next step
takes fresh pages, which the kernel zeroes on first touch: on GPT-2 small, CPU,
batch 4, ~68k more page faults a step than dense and a step ratio of 1.18
where this module brings it to ~1.10 (docs/performance.md).

How (public APIs only).  From the moment the mask returns the masked weight to
the end of the target module's forward, a
``torch.autograd.graph.saved_tensors_hooks`` pair is active.  Its pack hook
recognises the masked weight the consumer saves (same storage as the output the
mask module just returned, seen by a forward hook on the mask module) and stores
a recipe instead: the parameter, a snapshot of the mask's state (threshold,
tau) and the view's geometry.  The unpack hook runs the mask again from the
recipe.  The forward's copy is then freed as soon as the module's forward
returns, and the next module reuses its memory.  Cost: one more masked-weight
pass per target in backward (0.030 s a step on GPT-2 small, ~1%).
Values are bit-identical: the same kernel on the same inputs.  The recomputed
tensor then serves once more: the consumer's backward, which reads it, runs
before the mask's own backward (that one needs its result), so the mask's
backward writes the weight's gradient into it (``fused.offer_buffer``) instead
of into fresh memory the kernel would have to fault in and zero.

Which masks.  A mask module opts in by defining ``recipe(w) -> (() -> Tensor) or
None``: a function that recomputes its output for input ``w`` with the state it
has now (PDPMask and the baselines' HardMask do).

When not.  Nothing is packed under no_grad, inside torch.compile (the compiler
plans its own memory), for sharded (FSDP2) parameters, or when the model uses
activation checkpointing (an HF module's ``gradient_checkpointing`` flag is on):
saved-tensor hooks do not stack, only the innermost pair applies, and
checkpointing has its own.
If you use your own saved-tensor hooks (activation offloading), pass
``KernelOptions(recompute=False)``.  What the pack hook passes through (the
module's input) is saved as under any saved-tensor hooks (checkpointing,
offloading): without autograd's check that it was not modified in place before
backward.  With ``create_graph=True`` the recipe runs with grad enabled, so
double backward sees the masked weight's graph (and no buffer is handed over).
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from pdp_gpt2.pdp import fused, sharded


class _Recipe:
    """What the pack hook stores in place of the masked weight."""

    __slots__ = ("fn", "node", "size", "stride", "offset")

    def __init__(self, fn, node, x: torch.Tensor):
        self.fn, self.node = fn, node
        self.size, self.stride, self.offset = x.size(), x.stride(), x.storage_offset()


def _unpack(x):
    if not isinstance(x, _Recipe):
        return x
    base = x.fn()  # grad mode as the backward runs it: on only under create_graph=True
    if not torch.is_grad_enabled():
        # Once the consumer's backward has used it (it runs before the masked weight's own
        # backward, which needs its result), nothing holds this tensor but us: the mask's
        # backward writes the weight's gradient into it instead of into a new tensor.
        fused.offer_buffer(x.node, base)
    if base.size() == x.size and base.stride() == x.stride and x.offset == 0:
        return base
    return base.as_strided(x.size, x.stride, x.offset)  # the consumer saved a view (e.g. linear's w.t())


class RecomputeHooks:
    """The hooks on one target module and its mask; ``remove()`` takes them all off.

    The saved-tensor hooks are active from the moment the mask has returned the
    masked weight to the end of the module's forward: the consumer's saves only
    (the mask's own Function keeps autograd's usual saving and checks).
    """

    def __init__(self, module: nn.Module, mask: nn.Module, original: nn.Parameter,
                 skip: Callable[[], bool] = lambda: False):
        self.mask, self.original, self.skip = mask, original, skip
        self._local = threading.local()  # per thread: armed?, the active context, the outputs it guards
        self._handles = [
            module.register_forward_pre_hook(self._arm),
            mask.register_forward_hook(self._saw_output),
            module.register_forward_hook(self._disarm, always_call=True),
        ]

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # ---- hooks ---------------------------------------------------------------------------
    def _arm(self, module, args):
        self._local.armed = (torch.is_grad_enabled() and not torch.compiler.is_compiling() and not self.skip()
                             and not sharded.is_sharded(self.original))
        self._local.ctx, self._local.outs = None, []

    def _saw_output(self, mask, args, out):
        if not getattr(self._local, "armed", False) or out is args[0] or out.numel() == 0:
            return  # not in a grad-mode forward of the module, or the mask is the identity now
        fn = mask.recipe(args[0])
        if fn is None:
            return
        # out.grad_fn: where the recomputed tensor is offered (fused.offer_buffer takes it only
        # if it is the fused masked weight's node, not e.g. a fake-quant's)
        self._local.outs.append((weakref.ref(out), out.untyped_storage().data_ptr(), fn, out.grad_fn))
        if self._local.ctx is None:
            self._local.ctx = saved_tensors_hooks(self._pack, _unpack)
            self._local.ctx.__enter__()

    def _disarm(self, module, args, output):
        ctx = getattr(self._local, "ctx", None)
        self._local.armed, self._local.ctx, self._local.outs = False, None, []
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def _pack(self, x: torch.Tensor):
        try:
            ptr = x.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):  # no plain storage (sparse, some subclasses): not ours
            return x
        # The storage pointer identifies a mask output only while that output is alive
        # (after it dies its memory may hold anything): hence the weak reference.
        for ref, out_ptr, fn, node in self._local.outs:
            if out_ptr == ptr and ref() is not None:
                return _Recipe(fn, node, x)
        return x
