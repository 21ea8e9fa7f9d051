"""Recompute each masked weight in backward instead of keeping it alive from forward.

A target's consumer (``addmm`` in GPT-2's Conv1D, ``linear`` elsewhere) saves the masked weight
for backward, so every masked weight would be alive from its forward to its backward: one more
copy of all target weights at the peak, taken fresh from the kernel every step on CPU. Instead,
while a target module runs forward, a ``torch.autograd.graph.saved_tensors_hooks`` pair stores a
recipe (the parameter, a snapshot of the mask's state) in place of the masked weight, and backward
runs the mask again from it: bit-identical values, one more mask pass. The recomputed tensor then
receives the weight's gradient (``fused.offer_buffer``). A mask opts in by defining ``recipe(w)``.

Off under no_grad, inside torch.compile, for sharded (FSDP2) parameters and with activation
checkpointing (saved-tensor hooks do not stack); with saved-tensor hooks of your own, pass
``KernelOptions(recompute=False)``. Measurements: docs/performance.md.
"""
from __future__ import annotations

import threading
import weakref
from typing import Callable

import torch
from torch import nn
from torch.autograd.graph import saved_tensors_hooks

from pdp_gpt2.pdp.kernels import fused, sharded


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
