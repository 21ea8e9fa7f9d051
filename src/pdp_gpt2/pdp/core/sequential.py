"""Layer-by-layer calibration: each repeated block sees the outputs of the blocks before it as they
are *after* those blocks were changed (the sequential scheme of SparseGPT and GPTQ).

Every block is called directly on inputs captured once, not the whole model once per block
(O(blocks^2) forwards). The blocks are read off the target names, no per-architecture table:
the first numbered component is the block (``transformer.h.3.attn.c_attn`` -> block 3). One dense
forward per calibration batch records each block's inputs (pre-hooks; the last one stops the
forward); then block by block, hooks hand the targets' inputs to ``observe(target, x)``,
``visit(targets)`` changes their weights, and the block runs again to feed the next. Targets
outside that stack are visited last, on full forwards of the model as it is then.
"""
from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from pdp_gpt2.pdp.core.targets import Target

_BLOCK = re.compile(r"^(?P<stack>.+?)\.(?P<index>\d+)(\.|$)")  # the first numbered component


class _Stop(Exception):
    """Raised by the last block's pre-hook: the rest of the forward is not needed."""


def block_of(name: str) -> tuple[str, int] | None:
    """('transformer.h', 3) for 'transformer.h.3.attn.c_attn'; None for a name outside numbered blocks."""
    m = _BLOCK.match(name)
    return (m.group("stack"), int(m.group("index"))) if m else None


def _batches(blocks: torch.Tensor, batch_size: int):
    return [blocks[i:i + batch_size] for i in range(0, len(blocks), batch_size)]


def _forward(model: nn.Module, ids: torch.Tensor) -> None:
    # use_cache=False: no cache object is made and handed to the blocks (calling a block again
    # below would append to it)
    model(input_ids=ids.to(next(model.parameters()).device), use_cache=False)


class _Call:
    """How the model called one block on one batch, replayable with other hidden states."""

    def __init__(self, args: tuple, kwargs: dict):
        if args:
            self.hidden, self.args, self.kwargs, self.positional = args[0], args[1:], kwargs, True
        elif "hidden_states" in kwargs:
            rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            self.hidden, self.args, self.kwargs, self.positional = kwargs["hidden_states"], (), rest, False
        else:
            raise ValueError("a block was called without hidden states (no positional argument and no "
                             "'hidden_states' keyword): cannot replay it layer by layer")

    def __call__(self, block: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        if self.positional:
            out = block(hidden, *self.args, **self.kwargs)
        else:
            out = block(*self.args, hidden_states=hidden, **self.kwargs)
        return out[0] if isinstance(out, (tuple, list)) else out  # transformers < 5 returns a tuple


def _observed(targets: list[Target], observe: Callable[[Target, torch.Tensor], None], run: Callable[[], object]):
    """Run ``run()`` with every input of each target handed to ``observe`` (forward hooks, always removed)."""

    def hook(t):
        def fn(_module, inputs, _output):
            observe(t, inputs[0].detach())
        return fn

    handles = [t.module.register_forward_hook(hook(t)) for t in targets]
    try:
        run()
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def visit_sequentially(model: nn.Module, targets: list[Target], calibration: torch.Tensor,
                       observe: Callable[[Target, torch.Tensor], None], visit: Callable[[list[Target]], None],
                       *, batch_size: int = 8, progress: bool | None = None, desc: str = "layers") -> None:
    """Block after block (module docstring): ``observe(target, x)`` for every input ``x`` a target of
    the block sees on ``calibration`` (n, length token ids), then ``visit(block_targets)``, which may
    change their weights in place; later blocks see the result.  ``progress``: a bar over the
    blocks (None: only on a terminal, and only once it has run for a second)."""
    placed = [(t, block_of(t.name)) for t in targets]
    stack = next((b[0] for _, b in placed if b is not None), None)
    by_block: dict[int, list[Target]] = {}
    for t, b in placed:
        if b is not None and b[0] == stack:
            by_block.setdefault(b[1], []).append(t)
    rest = [t for t, b in placed if b is None or b[0] != stack]
    batches = _batches(calibration, batch_size)
    was_training = model.training
    model.eval()
    try:
        if by_block:
            container = model.get_submodule(stack)
            first, last = min(by_block), max(by_block)
            calls = _capture(model, [container[j] for j in range(first, last + 1)], batches)
            hidden = [c[0].hidden for c in calls]
            bar = tqdm(range(first, last + 1), desc=desc, leave=False, delay=1.0,
                       disable=None if progress is None else not progress)
            for j in bar:
                block, replay = container[j], [c[j - first] for c in calls]
                mine = by_block.get(j, [])
                if mine:
                    _observed(mine, observe, lambda: [r(block, h) for r, h in zip(replay, hidden)])
                    visit(mine)
                hidden = [r(block, h) for r, h in zip(replay, hidden)]  # with the changed weights
        if rest:
            _observed(rest, observe, lambda: [_forward(model, ids) for ids in batches])
            visit(rest)
    finally:
        model.train(was_training)


def _capture(model: nn.Module, blocks: list[nn.Module], batches: list[torch.Tensor]) -> list[list[_Call]]:
    """For each batch, how the model calls each of ``blocks`` (consecutive blocks of one stack)."""
    out: list[list[_Call]] = []

    def hook(i):
        def fn(_module, args, kwargs):
            out[-1].append(_Call(args, kwargs))
            if i == len(blocks) - 1:
                raise _Stop
        return fn

    handles = [b.register_forward_pre_hook(hook(i), with_kwargs=True) for i, b in enumerate(blocks)]
    try:
        for ids in batches:
            out.append([])
            try:
                _forward(model, ids)
            except _Stop:
                pass
    finally:
        for h in handles:
            h.remove()
    for calls in out:
        for c in calls[1:]:
            c.hidden = None  # only the first block's dense inputs are used: drop the others
    return out
