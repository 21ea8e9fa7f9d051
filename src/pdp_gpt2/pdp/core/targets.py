"""Which weights PDP prunes, and how each one is laid out.

Selection is by ``isinstance`` plus module-name patterns (never ``type(m) in {...}``, which misses
subclasses). The default picks every ``nn.Linear`` and HF ``Conv1D`` inside the repeated
transformer blocks: a module whose dotted name holds a numeric index (``transformer.h.3.mlp.c_fc``,
``model.layers.0.self_attn.q_proj``), which leaves out embeddings and the LM head on GPT-2, OPT and
Llama without a per-architecture table. GPT-2's Conv1D stores its weight as (in, out), the
transpose of nn.Linear's; ``Target.out_dim`` records the output axis so row pruning, N:M groups and
per-channel quantization are right for both.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from torch import nn

from pdp_gpt2.errors import UsageError

from pdp_gpt2.pdp.patterns.structures import PRUNABLE, Conv1D, out_dim_of  # noqa: F401  (Conv1D: export reads it here)
_IN_BLOCK = re.compile(r"(^|\.)\d+(\.|$)")


@dataclass
class Target:
    name: str  # dotted module name
    module: nn.Module
    out_dim: int  # axis of output channels in .weight: 0 for Linear, 1 for Conv1D

    @property
    def in_dim(self) -> int:
        return 1 - self.out_dim


def _tied_to_input_embedding(model: nn.Module, module: nn.Module) -> bool:
    get_in = getattr(model, "get_input_embeddings", None)
    emb = get_in() if callable(get_in) else None
    return emb is not None and getattr(emb, "weight", None) is getattr(module, "weight", None)


def find_targets(model: nn.Module, patterns: list[str] | None = None) -> list[Target]:
    """Prunable modules of ``model``, in ``named_modules`` order.

    ``patterns``: fnmatch globs on module names (``"*.mlp.*"``, ``"transformer.h.0.attn.c_attn"``).
    ``None`` selects every Linear/Conv1D inside the repeated blocks.
    """
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        if patterns is None:
            chosen = bool(_IN_BLOCK.search(name))
        else:
            chosen = any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if not chosen:
            continue
        if _tied_to_input_embedding(model, module):
            raise UsageError(
                f"{name}.weight is tied to the input embedding; pruning it would prune the embedding too. "
                "Untie the weights or leave it out of targets"
            )
        found.append(Target(name, module, out_dim_of(module)))
    if not found:
        what = "no Linear/Conv1D inside numbered blocks" if patterns is None else f"nothing matches {patterns}"
        raise UsageError(f"no prunable weights found: {what}")
    return found
