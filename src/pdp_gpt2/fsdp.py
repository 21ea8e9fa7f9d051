"""FSDP2 (``fully_shard``: DTensor weights) in a loop of your own: shard a masked model, checkpoint
it, and gather the plain model at the end (docs/distributed.md has the loop).

Masks go on first: ``fully_shard`` then shards the parameter inside each parametrization, and in
every forward the mask receives the weight FSDP has just gathered, so the masked forward and its
gradient are the unsharded ones. After each optimizer step the drivers compute thresholds from
the shards (pdp/kernels/sharded.py), bit for bit the full-tensor ones. Every function here is collective
and needs an initialized process group. Imports torch and the core (``pdp_gpt2.pdp``) only.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.errors import UsageError
from pdp_gpt2.names import ORIGINAL, STATE_FILE
from pdp_gpt2.pdp.kernels.sharded import barrier


def _mesh():
    from torch.distributed.tensor import init_device_mesh

    kind = "cuda" if "nccl" in str(torch.distributed.get_backend()) else "cpu"
    return init_device_mesh(kind, (torch.distributed.get_world_size(),))


def _is_main() -> bool:
    return torch.distributed.get_rank() == 0


def plain_state_dict(state: dict) -> dict:
    """A masked model's state_dict with a plain model's keys: ``X.parametrizations.weight.original``
    becomes ``X.weight`` and the masks' buffers (thresholds, keep-masks) are dropped."""
    masks = "." + ORIGINAL.removesuffix("original")  # ".parametrizations.weight.": the masks' buffers
    out = {}
    for k, v in state.items():
        if k.endswith("." + ORIGINAL):
            out[k.removesuffix(ORIGINAL) + "weight"] = v
        elif masks not in k:
            out[k] = v
    return out


def shard_model(model: torch.nn.Module, mesh=None) -> torch.nn.Module:
    """FSDP2: ``fully_shard`` each transformer block (the model's ``_no_split_modules``), then
    the root (embeddings, final norm, a tied head).  Call after ``attach``; the process group
    must be initialized (torchrun)."""
    from torch.distributed.fsdp import fully_shard

    mesh = mesh if mesh is not None else _mesh()
    names = set(getattr(model, "_no_split_modules", None) or [])
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise UsageError(f"--fsdp: {type(model).__name__} names no transformer block class "
                         "(_no_split_modules) to shard by")
    for b in blocks:
        fully_shard(b, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def gather_plain_model(model: torch.nn.Module):
    """The full model gathered from its shards (collective: every rank calls it), as a plain
    HF model on CPU on rank 0 (None elsewhere).  Call after the driver's finalize."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not _is_main():
        return None
    plain = AutoModelForCausalLM.from_config(model.config)
    missing, unexpected = plain.load_state_dict(plain_state_dict(full), strict=False)
    tied = set()
    if getattr(model.config, "tie_word_embeddings", False):  # the head is the embedding: loaded with it
        tied = {k for k in missing if k.endswith("lm_head.weight")}
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"gathered state does not fit a plain {type(plain).__name__}: "
                           f"missing {sorted(set(missing) - tied)}, unexpected {sorted(unexpected)}")
    return plain.eval()


def save_sharded(path, model: torch.nn.Module, optimizer, driver=None) -> None:
    """A resumable checkpoint of a fully_shard-ed run (collective): every rank writes its own
    shards of the weights and optimizer state (torch.distributed.checkpoint); the masks'
    buffers (thresholds, keep-masks: the same on every rank) travel in the model state, and
    rank 0 writes the driver's state (sparsity, steps, budgets) last, as the completion marker."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))
    barrier()
    if _is_main():
        atomic_write_json(Path(path) / STATE_FILE, driver.state_dict() if driver is not None else {})
    barrier()


def load_sharded(path, model: torch.nn.Module, optimizer, driver=None) -> None:
    """Inverse of :func:`save_sharded` on a model attached and sharded as the saved one was."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    msd, osd = get_state_dict(model, optimizer)
    state = {"model": msd, "optim": osd}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    if driver is not None:
        driver.load_state_dict(json.loads((Path(path) / STATE_FILE).read_text()))
