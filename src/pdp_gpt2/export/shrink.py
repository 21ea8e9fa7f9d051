"""The physical shrink: a model whose MLP neurons or attention heads were pruned whole becomes a
narrower dense model.

A unit whose output weights (an MLP neuron's row of GPT-2's c_proj or column of Llama's down_proj
and OPT's fc2; a head's columns of Llama's o_proj) are all exact zeros adds nothing to the residual
stream, whatever its input weights and activation make of the input; so it goes with its input
weights and input bias entries, and the logits stay the same up to float summation order. The
output side alone decides: that holds for every activation (and for every attention pattern), and
the input side is sliced away, so its values need not be zero (``--pattern neurons`` and ``heads``
zero both). A plain Hugging Face config has one MLP width and one head count, so every layer must
lose the same number of units. Which modules hold a unit, how each lays them out, and how a config
holds fewer (or why it cannot: GPT-2 and OPT heads) come from
:mod:`pdp_gpt2.pdp.patterns.structures`.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.patterns.structures import FAMILIES, Structure, removed_units, structures

KINDS = tuple(dict.fromkeys(f.kind for f in FAMILIES))  # "MLP neurons", "attention heads"


def plan(model: nn.Module) -> tuple[list[tuple[str, list[tuple[Structure, torch.Tensor]]]], list[str]]:
    """([(kind, [(structure, indices of the units kept)])] for every kind that loses units, [why the
    removed units of a kind stay as zeros]); refuses a model that cannot be shrunk, in one line."""
    found = {k: structures(model, k) for k in KINDS}
    if not any(found.values()):
        raise UsageError("no MLP or attention of a known family (" + ", ".join(sorted({f.name for f in FAMILIES}))
                         + "): nothing to shrink")
    chosen, stay = [], []
    for kind, ss in found.items():
        dead = [removed_units(s).cpu() for s in ss]
        counts = [int(d.sum()) for d in dead]
        if not ss or max(counts) == 0:
            continue
        fam = ss[0].family
        if fam.fixed:
            stay.append(f"{kind} stay as zeros: {fam.fixed}")
            continue
        if len({s.family.name for s in ss}) > 1 or len({s.width for s in ss}) > 1:
            raise UsageError(f"the layers' {kind} differ in family or count; a shrunk model needs one "
                             f"{fam.field} in its config")
        if min(counts) != max(counts):
            raise UsageError(f"the layers lose different numbers of {kind} ({min(counts)} to {max(counts)}) but a "
                             f"Hugging Face config has one {fam.field}: train with --allocation layer")
        if counts[0] == ss[0].width:
            raise UsageError(f"every one of a layer's {kind} is pruned: a shrunk layer needs at least one")
        if not isinstance(getattr(model.config, fam.field, None), (int, type(None))):
            raise UsageError(f"the config's {fam.field} is not one number: this model cannot be shrunk")
        chosen.append((kind, [(s, (~d).nonzero().flatten()) for s, d in zip(ss, dead)]))
    if not chosen:
        raise UsageError("; ".join(stay) + " (export without --shrink keeps them)" if stay else
                         "no MLP neuron or attention head has all its output weights zero, so nothing can be removed: "
                         "shrink needs a model pruned with --pattern neurons or heads (a dense or unstructured one "
                         "stays as wide)")
    return chosen, stay


def parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied LM head counts once)."""
    return sum(p.numel() for p in model.parameters())


def shrink(model: nn.Module) -> tuple[nn.Module, dict]:
    """(narrower copy of ``model``, record); ``model`` is left as it is.

    The copy is the same class built from a config saying the new widths (each family's
    ``resize``: GPT-2's ``n_inner`` set explicitly, Llama's ``head_dim`` written out), loaded with
    the sliced weights strictly: every member sliced along its unit axis at the kept units' indices,
    every input bias likewise. The record says, per kind resized, the family, config field, units
    before/after and layers; why any removed units stay as zeros; parameters before/after; and each
    sliced tensor's shape before/after.
    """
    chosen, stay = plan(model)
    state = dict(model.state_dict())
    config = copy.deepcopy(model.config)
    shapes, parts = {}, []
    for kind, kept in chosen:
        fam, width, new_width = kept[0][0].family, kept[0][0].width, int(kept[0][1].numel())
        for s, keep in kept:
            for m in s.members:
                for suffix, slot in [("weight", m.slot)] + ([("bias", m.bias_slot)] if m.bias else []):
                    key = f"{m.name}.{suffix}"
                    t = state[key].detach()
                    state[key] = t.index_select(slot.axis, slot.indices(keep, s.width).to(t.device)).contiguous()
                    shapes[key] = {"before": list(t.shape), "after": list(state[key].shape)}
        fam.resize(config, new_width)
        parts.append({"kind": kind, "family": fam.name, "field": fam.field, "before": width, "after": new_width,
                      "layers": len(kept), "removed_per_layer": width - new_width})
    dtype = next(model.parameters()).dtype
    small = type(model)(config).to(dtype)
    small.load_state_dict(state, strict=True)  # a config field that did not narrow every member fails here
    if getattr(model, "generation_config", None) is not None:
        small.generation_config = copy.deepcopy(model.generation_config)
    small.eval()
    record = {"resized": parts, "kept_as_zeros": stay, "parameters_before": parameters(model),
              "parameters_after": parameters(small), "shapes": shapes}
    return small, record


def describe(record: dict) -> str:
    """The record's resizing in words: 'MLP neurons (n_inner) 256 -> 128 in 2 layers; ...'."""
    return "; ".join(f"{p['kind']} ({p['field']}) {p['before']} -> {p['after']} in {p['layers']} {p['family']} layers"
                     for p in record["resized"])


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
