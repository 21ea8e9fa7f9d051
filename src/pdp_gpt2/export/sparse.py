"""The sparse CPU runtime: pruned Linear/Conv1D layers run on torch's own CSR kernels.

:func:`sparsify` swaps every sufficiently sparse Linear or HF Conv1D for a :class:`SparseLinear`
holding W (out, in) as CSR with int32 indices (int64 ones move twice the index bytes): ``torch.mv``
for one row (decode), ``torch.sparse.mm`` for several (prefill), and a dense copy where the dense
GEMM is faster. Which path a call takes is a fixed rule on density and rows,
:func:`max_sparse_rows`, not a timing at load, so a model behaves the same on every load and
machine (the measurements behind it: docs/performance.md, "Inference"). Only float32/float64
weights are converted (torch's CPU CSR kernels are slower than dense for fp16/bf16). Inference
only: the CSR weights are buffers, with no grad.
"""
from __future__ import annotations

import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from pdp_gpt2.pdp.core.targets import PRUNABLE, Conv1D

# density (nonzeros / numel) -> most rows per call that run sparse (more rows: dense).
# From benchmarks/inference.py-style microbenchmarks on GPT-2-small shapes (3072x768, 768x3072),
# 1 thread, AVX-512: at density 0.1 CSR beat dense GEMM at every row count up to 512 (1.5-6x);
# at 0.2 up to ~64 rows (128: 0.95x); at 0.35 up to ~16 rows (1.1-1.3x); at 0.5 only the matvec
# (1.25-1.8x); above that dense everywhere.  docs/performance.md "Inference" has the table.
RULE = ((0.12, math.inf), (0.25, 64), (0.40, 16), (0.55, 1))
SPARSE_DTYPES = (torch.float32, torch.float64)


def max_sparse_rows(density: float) -> float:
    """Most rows per call for which a layer of this density runs sparse; 0 = keep the layer dense."""
    for top, rows in RULE:
        if density <= top:
            return rows
    return 0


def _csr32(w: torch.Tensor) -> torch.Tensor:
    with warnings.catch_warnings():  # "CSR support is in beta": said once per layer, not ours to act on
        warnings.simplefilter("ignore", UserWarning)
        c = w.to_sparse_csr()
    # Built from a valid CSR tensor, so the invariant checks would only cost time.
    return torch.sparse_csr_tensor(c.crow_indices().to(torch.int32), c.col_indices().to(torch.int32),
                                   c.values(), size=c.shape, check_invariants=False)


class SparseLinear(nn.Module):
    """y = x W^T + b, W (out, in) held as int32 CSR; a dense copy only when the rule needs one."""

    def __init__(self, weight_out_in: torch.Tensor, bias: torch.Tensor | None, max_rows: float):
        super().__init__()
        w = weight_out_in.detach()
        self.in_features, self.out_features = w.shape[1], w.shape[0]
        self.max_rows = max_rows
        self.density = float((w != 0).sum()) / w.numel()
        self.register_buffer("csr", _csr32(w), persistent=False)
        # Dense fallback for calls with more rows than max_rows; a layer sparse at every row count keeps none.
        self.register_buffer("dense", None if math.isinf(max_rows) else w.clone(), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.detach().clone(), persistent=False)

    def extra_repr(self) -> str:
        rows = "all" if math.isinf(self.max_rows) else f"<={self.max_rows}"
        return f"in={self.in_features}, out={self.out_features}, density={self.density:.3f}, sparse rows {rows}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1] if x.numel() else 0
        if rows > self.max_rows or x.dtype != self.csr.dtype or rows == 0:
            w = self.dense if self.dense is not None else self.csr.to_dense()
            return F.linear(x, w.to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))
        x2 = x.reshape(rows, self.in_features)
        if rows == 1:  # y = b + W x in one kernel
            v = x2[0].contiguous()
            y = (torch.mv(self.csr, v) if self.bias is None else torch.addmv(self.bias, self.csr, v)).unsqueeze(0)
        else:  # (W x^T)^T: the CSR operand must come first
            y = torch.sparse.mm(self.csr, x2.t().contiguous()).t()
            if self.bias is not None:
                y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def stored_bytes(self, rows: int = 1) -> int:
        """Weight bytes a call with ``rows`` rows reads: CSR values + indices, or the dense copy."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        if rows > self.max_rows:
            return self.in_features * self.out_features * self.csr.values().element_size() + bias
        c = self.csr
        return sum(t.numel() * t.element_size() for t in (c.values(), c.col_indices(), c.crow_indices())) + bias


def _out_in(module: nn.Module) -> torch.Tensor:
    """The (out, in) weight: Linear stores it so, HF Conv1D stores (in, out)."""
    w = module.weight.detach()
    return w.t() if Conv1D is not None and isinstance(module, Conv1D) else w


def sparsify(model: nn.Module, names: list[str] | None = None) -> dict[str, SparseLinear]:
    """Swap sparse enough Linear/Conv1D modules (all, or only ``names``) for SparseLinear, in place.

    Skips the input/output embeddings (GPT-2's LM head is tied to the token
    embedding, which is never pruned) and any layer :func:`max_sparse_rows`
    keeps dense.  Returns {module name: its SparseLinear}.
    """
    skip = set()
    for get in ("get_input_embeddings", "get_output_embeddings"):
        emb = getattr(model, get, lambda: None)()
        if emb is not None and getattr(emb, "weight", None) is not None:
            skip.add(emb.weight.data_ptr())
    modules = dict(model.named_modules())
    wanted = set(names) if names is not None else None
    swapped = {}
    for name, mod in list(modules.items()):
        w = getattr(mod, "weight", None)
        if not name or not isinstance(mod, PRUNABLE) or w is None or w.dim() != 2 or w.dtype not in SPARSE_DTYPES:
            continue
        if (wanted is not None and name not in wanted) or w.data_ptr() in skip:
            continue
        rows = max_sparse_rows(float((w != 0).sum()) / w.numel())
        if rows == 0:
            continue
        new = SparseLinear(_out_in(mod), getattr(mod, "bias", None), rows)
        parent, _, child = name.rpartition(".")
        setattr(modules[parent] if parent else model, child, new)
        swapped[name] = new
    return swapped


def decode_weight_bytes(model: nn.Module) -> int:
    """Weight bytes one decode step (1 row) reads: every matmul weight and bias, the LM head included.

    Embedding lookups read one row and are left out; a tied LM head counts once
    (as the Linear that multiplies by it).  This is the memory-traffic floor of
    batch-1 decoding: tokens/s can be at most bandwidth / these bytes.
    """
    total, seen = 0, set()
    for mod in model.modules():
        if isinstance(mod, SparseLinear):
            total += mod.stored_bytes(1)
        elif isinstance(mod, PRUNABLE) and getattr(mod, "weight", None) is not None:
            for t in (mod.weight, getattr(mod, "bias", None)):
                if t is not None and t.data_ptr() not in seen:
                    seen.add(t.data_ptr())
                    total += t.numel() * t.element_size()
    return total
