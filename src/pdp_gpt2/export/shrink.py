"""The physical shrink: a model whose MLP neurons were pruned whole becomes a narrower dense model.

A neuron whose output weights (GPT-2 c_proj's row j, Llama down_proj's column j, OPT fc2's column j)
are all exact zeros adds nothing to the residual stream, whatever its input weights and activation
make of the input; so it goes with its input weights and input bias entries, and the logits stay
the same up to float summation order. The output side alone decides: that holds for every
activation, and the input side is sliced away, so its values need not be zero (``--pattern
neurons`` zeros both). A plain Hugging Face config has one MLP width, so every MLP must lose the
same number of neurons. Which modules hold a neuron, and the width's config field, come from
:func:`pdp_gpt2.pdp.patterns.structures.mlp_structures`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.patterns.structures import FAMILIES, Structure, mlp_structures, removed_units


def plan(model: nn.Module) -> list[tuple[Structure, torch.Tensor]]:
    """[(MLP, indices of the neurons kept)]; refuses a model that cannot be shrunk, in one line."""
    structures = mlp_structures(model)
    if not structures:
        raise UsageError("no MLP of a known family (" + ", ".join(f.name for f in FAMILIES) + "): nothing to shrink")
    if len({s.family.name for s in structures}) > 1 or len({s.width for s in structures}) > 1:
        raise UsageError("the MLPs differ in family or width; a shrunk model needs one MLP width in its config")
    dead = [removed_units(s).cpu() for s in structures]
    counts = [int(d.sum()) for d in dead]
    if max(counts) == 0:
        raise UsageError("no MLP neuron has all its output weights zero, so nothing can be removed: shrink needs "
                         "a model pruned with --pattern neurons (a dense or unstructured one stays as wide)")
    if min(counts) != max(counts):
        raise UsageError(f"the MLPs lose different numbers of neurons ({min(counts)} to {max(counts)}) but a Hugging "
                         "Face config has one MLP width: train with --allocation layer")
    return [(s, (~d).nonzero().flatten()) for s, d in zip(structures, dead)]


def parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied LM head counts once)."""
    return sum(p.numel() for p in model.parameters())


def shrink(model: nn.Module) -> tuple[nn.Module, dict]:
    """(narrower copy of ``model``, record); ``model`` is left as it is.

    The copy is the same class built from a config whose width field says the new width (GPT-2's
    ``n_inner`` set explicitly), loaded with the sliced weights strictly: every member sliced along
    its unit axis, every input bias along its entries. The record says the family, widths,
    neurons removed per MLP, parameters before/after and each sliced tensor's shape before/after.
    """
    kept = plan(model)
    fam, width = kept[0][0].family, kept[0][0].width
    new_width = int(kept[0][1].numel())
    if not isinstance(getattr(model.config, fam.width_field, None), (int, type(None))):
        raise UsageError(f"the config's {fam.width_field} is not one number: this model cannot be shrunk")
    state = dict(model.state_dict())
    shapes = {}
    for s, keep in kept:
        for m in s.members:
            for suffix, axis in [("weight", m.axis)] + ([("bias", 0)] if m.bias else []):
                key = f"{m.name}.{suffix}"
                t = state[key].detach()
                state[key] = t.index_select(axis, keep.to(t.device)).contiguous()
                shapes[key] = {"before": list(t.shape), "after": list(state[key].shape)}
    config = copy.deepcopy(model.config)
    setattr(config, fam.width_field, new_width)
    dtype = next(model.parameters()).dtype
    small = type(model)(config).to(dtype)
    small.load_state_dict(state, strict=True)  # a config field that did not narrow every member fails here
    if getattr(model, "generation_config", None) is not None:
        small.generation_config = copy.deepcopy(model.generation_config)
    small.eval()
    record = {"family": fam.name, "width_field": fam.width_field, "width_before": width, "width_after": new_width,
              "mlps": len(kept), "removed_per_mlp": width - new_width,
              "parameters_before": parameters(model), "parameters_after": parameters(small), "shapes": shapes}
    return small, record


@torch.no_grad()
def logit_gap(a: nn.Module, b: nn.Module, tokens: int = 16, seed: int = 0) -> float:
    """Largest |logit difference| of ``a`` and ``b`` on random tokens, over the largest |logit| of ``a``."""
    vocab = a.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (1, tokens), generator=torch.Generator().manual_seed(seed))
    x, y = a(ids).logits.float(), b(ids).logits.float()
    return float((x - y).abs().max() / x.abs().max().clamp_min(1e-12))


def shrunk_manifest(manifest: dict | None, state: dict[str, torch.Tensor], record: dict) -> dict:
    """The shrunk directory's pdp_pruning.json (data/manifest.py): the source's, its tensors recounted
    in the narrower weights, with ``shrink`` = ``record`` plus the sparsities before the shrink.

    A sliced tensor keeps the part of its target the shrink did not remove (none, for whole neurons),
    so the top-level sparsities describe the weights as they are now and export checks them as usual.
    """
    out = copy.deepcopy(manifest) if manifest is not None else {"method": None, "pattern": None}
    out.pop("format", None), out.pop("version", None)  # write_manifest puts its own first
    tensors, zeros, numel, targeted = {}, 0, 0, 0.0
    for name, t in (out.get("tensors") or {}).items():
        w, old = state[name], t["numel"]
        target = t.get("target_sparsity", 0.0) or 0.0
        removed = old - w.numel()
        target = max(0.0, target * old - removed) / max(w.numel(), 1)
        t = {**t, "shape": list(w.shape), "numel": w.numel(), "zeros": int((w == 0).sum()),
             "target_sparsity": round(target, 12)}
        tensors[name] = t
        zeros, numel, targeted = zeros + t["zeros"], numel + t["numel"], targeted + target * t["numel"]
    before = {k: out.get(k) for k in ("sparsity_target", "sparsity_actual")}
    out.update(tensors=tensors, sparsity_actual=zeros / max(numel, 1), sparsity_target=targeted / max(numel, 1),
               shrink={**record, **{f"{k}_before": v for k, v in before.items()}})
    return out
