"""The 2:4 (N:M) layout: kept values + 2-bit in-group indices, and the CUDA conversion.

Groups are M consecutive weights along the *input* dimension, the axis NVIDIA's
sparse tensor cores compress (and the one pdp/kernels/mask.py prunes along).  The
encoder works on the (out, in) view: Linear weights as stored, Conv1D weights
transposed.  Layout (docs/format.md): ``values`` is (out, in/M*N) in the
model's dtype, ``indices`` a packed stream of ceil(log2 M)-bit positions in the
same order, ascending within each group.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from pdp_gpt2.export.bits import pack_bits, packed_len, unpack_bits


def index_bits(m: int) -> int:
    return max(1, math.ceil(math.log2(m)))


def in_last_2d(w: torch.Tensor, group_dim: int) -> torch.Tensor:
    """The (rows, cols) view with groups along cols; group_dim is the axis of w they run on."""
    if w.dim() != 2:
        raise ValueError(f"N:M needs a 2-D weight, got shape {tuple(w.shape)}")
    return w if group_dim == 1 else w.t()


def nm_violation(w: torch.Tensor, group_dim: int, n: int = 2, m: int = 4) -> str | None:
    """None if every group of m along group_dim has at most n nonzeros, else why not."""
    if w.dim() != 2:
        return f"shape {tuple(w.shape)} is not 2-D"
    v = in_last_2d(w, group_dim)
    if v.shape[1] % m:
        return f"input dimension {v.shape[1]} is not divisible by {m}"
    counts = (v != 0).reshape(v.shape[0], -1, m).sum(-1)
    bad = counts > n
    if bool(bad.any()):
        row, grp = (int(i) for i in bad.nonzero()[0])
        return (f"{int(bad.sum())} of {bad.numel()} groups have more than {n} nonzeros "
                f"(first: output {row}, inputs {grp * m}..{grp * m + m - 1})")
    return None


def encode_nm(w: torch.Tensor, group_dim: int, n: int = 2, m: int = 4) -> dict[str, torch.Tensor]:
    """{'values': (rows, cols/m*n) kept entries, 'indices': packed positions}.  w must pass nm_violation."""
    v = in_last_2d(w, group_dim)
    rows, cols = v.shape
    g = v.reshape(rows, cols // m, m)
    # Take the nonzeros first, then pad with the lowest-index zeros; positions ascending.
    key = (g == 0).to(torch.int64) * m + torch.arange(m)
    idx = key.argsort(dim=-1)[..., :n].sort(dim=-1).values
    vals = g.gather(-1, idx).reshape(rows, cols // m * n)
    packed = pack_bits(idx.reshape(-1).numpy().astype(np.uint8), index_bits(m))
    return {"values": vals.contiguous(), "indices": torch.from_numpy(packed)}


def decode_nm(values: torch.Tensor, indices: torch.Tensor, shape, dtype: torch.dtype, group_dim: int,
              n: int = 2, m: int = 4) -> torch.Tensor:
    rows, cols = (shape[0], shape[1]) if group_dim == 1 else (shape[1], shape[0])
    count = rows * cols // m * n
    if values.numel() != count or indices.numel() != packed_len(count, index_bits(m)):
        raise ValueError(f"N:M payload sizes {values.numel()}/{indices.numel()} do not match shape {list(shape)}")
    idx = torch.from_numpy(unpack_bits(indices.numpy(), count, index_bits(m)).astype(np.int64))
    if bool((idx >= m).any()):
        raise ValueError("N:M index out of range")
    g = torch.zeros(rows, cols // m, m, dtype=dtype)
    g.scatter_(-1, idx.view(rows, cols // m, n), values.to(dtype).view(rows, cols // m, n))
    v = g.reshape(rows, cols)
    return (v if group_dim == 1 else v.t()).contiguous()


# ---- CUDA: semi-structured sparse kernels ------------------------------------------------


def to_semi_structured(model: nn.Module, names: list[str]) -> int:
    """Swap the named 2:4 modules' weights for ``torch.sparse.to_sparse_semi_structured``.

    Only on CUDA (the kernels are GPU-only; fp16/bf16, shape limits apply).  A
    Conv1D computes x @ W with W (in, out); it becomes an nn.Linear holding W.T,
    because the sparse tensor must be the (out, in) operand.  Modules that the
    kernels refuse stay dense.  Returns how many were converted.
    """
    from transformers.pytorch_utils import Conv1D

    if not torch.cuda.is_available():
        return 0
    from torch.sparse import to_sparse_semi_structured

    modules = dict(model.named_modules())
    converted = 0
    for name in names:
        mod = modules.get(name)
        if mod is None or mod.weight.device.type != "cuda":
            continue
        weight = mod.weight.detach()
        if isinstance(mod, Conv1D):
            lin = nn.Linear(weight.shape[0], weight.shape[1], bias=mod.bias is not None,
                            device=weight.device, dtype=weight.dtype)
            lin.weight.data.copy_(weight.t())
            if mod.bias is not None:
                lin.bias.data.copy_(mod.bias.detach())
            target, dense = lin, lin.weight.detach()
        else:
            target, dense = mod, weight
        try:
            sparse = to_sparse_semi_structured(dense.contiguous())
        except (RuntimeError, ValueError, NotImplementedError) as e:
            warnings.warn(f"{name}: kept dense ({str(e).splitlines()[0]})", stacklevel=2)
            continue
        target.weight = nn.Parameter(sparse, requires_grad=False)
        if target is not mod:
            parent_name, _, child = name.rpartition(".")
            setattr(modules[parent_name] if parent_name else model, child, target)
        converted += 1
    return converted
