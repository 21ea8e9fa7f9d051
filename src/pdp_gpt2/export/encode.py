"""The sparse encodings of a finalized model: which tensors are pruned (from pdp_pruning.json, or
guessed from their zeros), which share storage, and each tensor's smallest exact encoding (raw,
bitmask, bitmask with b-bit codes, or 2:4), with the header that describes them (docs/format.md).
"""
from __future__ import annotations

import torch
from torch import nn

from pdp_gpt2.data.manifest import MANIFEST, pruned_weights
from pdp_gpt2.errors import UsageError
from pdp_gpt2.export import compressed as C
from pdp_gpt2.export import nm24
from pdp_gpt2.pdp.core.targets import PRUNABLE, Conv1D, find_targets

VALUES = {"auto": None, "fp16": torch.float16, "fp32": torch.float32}
# A Linear/Conv1D outside the default targets counts as pruned from this share of exact zeros
# (well above what a trained dense weight has by chance, well below any useful sparsity).
PRUNED_ZERO_SHARE = 0.25


def pruned_tensors(model: nn.Module, manifest: dict | None = None) -> dict[str, int]:
    """{weight name: output-channel axis} of the pruned targets.

    With the model directory's pdp_pruning.json (``manifest``): the tensors it lists as
    pruned.  Without one (models pruned before it was written): a guess, the default PDP
    targets that hold any exact zeros, plus any Linear/Conv1D weight with at least
    PRUNED_ZERO_SHARE exact zeros (custom target patterns).
    """
    if manifest is not None:
        pruned, state = pruned_weights(manifest), model.state_dict()
        if missing := sorted(set(pruned) - set(state)):
            raise UsageError(f"{MANIFEST} lists {missing[0]}, which the model does not have")
        return pruned
    try:
        default = {t.name for t in find_targets(model)}
    except UsageError:  # no numbered blocks, or a tied weight: fall back to the zero share alone
        default = set()
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(module, PRUNABLE) or w is None or w.dim() != 2:
            continue
        share = float((w == 0).float().mean())
        if (name in default and share > 0) or share >= PRUNED_ZERO_SHARE:
            out[f"{name}.weight" if name else "weight"] = 1 if Conv1D and isinstance(module, Conv1D) else 0
    return out


def tied_aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{later name: first name} for state_dict entries sharing storage (GPT-2's lm_head = wte)."""
    first, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
    return aliases


def pick_bits(w: torch.Tensor, channel_dim: int, hint: int | None) -> tuple[int, torch.Tensor] | None:
    """(bits, scales) of the smallest symmetric per-channel grid w lies on exactly, or None."""
    order = ([hint] if hint else []) + [b for b in range(2, 9) if b != hint]
    probe = w.narrow(channel_dim, 0, min(4, w.shape[channel_dim]))  # cheap rejection of off-grid tensors
    for bits in order:
        if C.grid_scales(probe, bits, channel_dim) is not None:
            scales = C.grid_scales(w, bits, channel_dim)
            if scales is not None:
                return bits, scales
    return None


def encode_tensor(name: str, w: torch.Tensor, fmt: str, channel_dim: int | None, values_dtype, hint,
                  codes: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header entry, {payload key: tensor}) of one state_dict tensor."""
    w = w.detach().cpu().contiguous()
    spec = {"shape": list(w.shape), "dtype": C.dtype_name(w.dtype)}
    if channel_dim is None:
        spec["encoding"], parts = "raw", {"data": w}
    elif fmt == "2:4":
        vd = values_dtype or w.dtype
        spec.update(encoding="nm", n=2, m=4, group_dim=1 - channel_dim, values_dtype=C.dtype_name(vd))
        parts = nm24.encode_nm(w.to(vd), 1 - channel_dim)
    else:
        nnz, vd = int((w != 0).sum()), values_dtype or w.dtype
        grid = pick_bits(w, channel_dim, hint) if codes else None
        sizes = {"raw": w.numel() * w.element_size(),
                 "bitmask": (w.numel() + 7) // 8 + nnz * torch.finfo(vd).bits // 8}
        if grid is not None:
            sizes["bitmask-qcodes"] = ((w.numel() + 7) // 8 + C.packed_len(nnz, grid[0])
                                       + w.shape[channel_dim] * w.element_size())
        spec["encoding"] = min(sizes, key=sizes.get)
        spec["nnz"] = nnz
        if spec["encoding"] == "raw":
            parts = {"data": w}
        elif spec["encoding"] == "bitmask":
            spec["values_dtype"] = C.dtype_name(vd)
            parts = C.encode_bitmask(w, vd)
        else:
            spec.update(bits=grid[0], channel_dim=channel_dim)
            parts = C.encode_qcodes(w, grid[0], channel_dim, grid[1])
    keys = {role: name if role == "data" else f"{name}/{role}" for role in parts}
    spec["payloads"] = {role: C.payload_entry(keys[role], t) for role, t in parts.items()}
    return spec, {keys[role]: t for role, t in parts.items()}


def encode_model(model: nn.Module, fmt: str, values: str = "auto", hint: int | None = None,
                 codes: bool = True, manifest: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(pdp header, safetensors payloads) of a finalized model; refuses patterns fmt can't hold."""
    state = model.state_dict()
    aliases = tied_aliases(state)
    pruned = pruned_tensors(model, manifest)
    if not pruned:
        raise UsageError("no exact zeros in the target weights: not a pruned model (finalize a PDP run first)")
    if fmt == "2:4":
        for name, out_dim in pruned.items():
            if (why := nm24.nm_violation(state[name], 1 - out_dim)) is not None:
                raise UsageError(f"{name} is not 2:4 sparse along its input dimension ({why}); "
                                 "use --format compressed")
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    header = {"format": C.FORMAT, "version": C.VERSION, "layout": fmt,
              "torch_dtype": C.dtype_name(floating[0] if floating else torch.float32),
              "tied": {a: aliases[a] for a in aliases}, "tensors": {}}
    payloads = {}
    for name, t in state.items():
        if name in aliases:
            continue
        # A tied alias of a pruned weight (rare) is pruned under its first name.
        channel_dim = pruned.get(name, next((pruned[a] for a, f in aliases.items() if f == name and a in pruned),
                                            None))
        spec, parts = encode_tensor(name, t, fmt, channel_dim, VALUES[values], hint, codes)
        header["tensors"][name] = spec
        payloads.update(parts)
    header["header_sha256"] = C.header_digest(header)
    return header, payloads
