"""Several processes, one run: who writes, when ranks wait for each other, what is refused.

Under DDP (``torchrun`` / ``accelerate launch``) every rank holds the whole model and
DDP all-reduces gradients, so after each optimizer step the weights are bitwise equal
on all ranks, and PDP thresholds computed from them locally are equal too: no
communication is needed for masks.  Two things do need the ranks to agree:

* files: only rank 0 writes (and holds the run directory's lock, train/runlock.py), and
  ``barrier()`` orders "everyone has read the run directory" before "rank 0 changes it";
* stopping: a signal or a NaN loss may reach one rank only; ``max_over_ranks`` makes the
  decision collective, or one rank would wait forever in the next all-reduce.

Sharding.  FSDP2 (``fully_shard``: DTensor weights) is supported in a loop of your own:
``attach``, then :func:`shard_model`; the drivers then compute thresholds and keep-masks
from the shards, bit for bit the full-tensor ones (pdp/sharded.py), :func:`save_sharded` /
:func:`load_sharded` checkpoint, and :func:`gather_plain_model` gives rank 0 the plain
model for ``final/``.  The ``train`` command does not shard: Trainer/accelerate apply FSDP
themselves (not on CPU, and without our attach-before-shard order), and FSDP1 and DeepSpeed
would rank a flat shard as if it were the tensor.  ``refuse_sharded`` says so in one line
rather than silently prune the wrong weights.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from pdp_gpt2.errors import UsageError

# Set to a directory to make every rank write its per-step mask digests there (tests/test_ddp.py).
DIGEST_ENV = "PDP_GPT2_MASK_DIGEST_DIR"
_SHARDING_ENV = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed",
                 "ACCELERATE_USE_MEGATRON_LM": "Megatron-LM"}


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return rank() == 0


def refuse_sharded() -> None:
    """One clear line instead of wrong masks when a launcher asks for sharded parameters."""
    for var, name in _SHARDING_ENV.items():
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            raise UsageError(f"{name} is not supported ({var} is set): launch with plain DDP (torchrun, or "
                             "accelerate launch without --use_fsdp/--use_deepspeed), or shard with FSDP2 in "
                             "your own loop (attach, then train.distributed.shard_model; docs/performance.md, "
                             "Sharded)")


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def barrier() -> None:
    if _active():
        torch.distributed.barrier()


def max_over_ranks(*values: float) -> list[float]:
    """Each value's maximum over all ranks (the values themselves in one process)."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values])
    if "nccl" in str(torch.distributed.get_backend()):
        t = t.cuda()
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()


@torch.no_grad()
def mask_digest(model: torch.nn.Module) -> str:
    """sha256 over every mask parametrization's buffers (PDP thresholds, baseline keep-masks)."""
    h = hashlib.sha256()
    for name, module in model.named_modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        if plist is None:
            continue
        for bname, buf in plist[0].named_buffers():
            h.update(f"{name}.{bname}".encode())
            h.update(buf.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def digest_callback():
    """A TrainerCallback writing ``rank<r>.json`` ({step: mask digest}) if DIGEST_ENV is set, else None."""
    where = os.environ.get(DIGEST_ENV)
    if not where:
        return None
    from transformers import TrainerCallback

    class MaskDigest(TrainerCallback):
        # Runs after PDPCallback, i.e. on the thresholds just refreshed from this step's weights
        # and before any later forward (ddp_broadcast_buffers is off, so nothing overwrites them).
        def __init__(self):
            self.steps: dict[int, str] = {}

        def on_step_end(self, args, state, control, model=None, **kwargs):
            self.steps[state.global_step] = mask_digest(model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            Path(where).mkdir(parents=True, exist_ok=True)
            (Path(where) / f"rank{rank()}.json").write_text(json.dumps({"world_size": world_size(),
                                                                        "steps": self.steps}))

    return MaskDigest()


# ---- FSDP2 (fully_shard) -----------------------------------------------------------------
# Masks go on first (attach), then the model is sharded: fully_shard then shards the
# parameter inside each parametrization (``...parametrizations.weight.original`` becomes a
# DTensor), and in every forward the mask receives the weight FSDP has just gathered, as a
# plain tensor, so the masked forward and its gradient are the unsharded ones; the gradient
# reaches the sharded parameter through FSDP's reduce-scatter.  After each optimizer step the
# drivers see DTensor weights and pdp/sharded.py recomputes thresholds from the shards.


def _mesh():
    from torch.distributed.tensor import init_device_mesh

    kind = "cuda" if "nccl" in str(torch.distributed.get_backend()) else "cpu"
    return init_device_mesh(kind, (torch.distributed.get_world_size(),))


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


def plain_state_dict(state: dict) -> dict:
    """A masked model's state_dict with a plain model's keys: ``X.parametrizations.weight.original``
    becomes ``X.weight`` and the masks' buffers (thresholds, keep-masks) are dropped."""
    out = {}
    for k, v in state.items():
        if k.endswith(".parametrizations.weight.original"):
            out[k[: -len(".parametrizations.weight.original")] + ".weight"] = v
        elif ".parametrizations.weight." not in k:
            out[k] = v
    return out


def gather_plain_model(model: torch.nn.Module):
    """The full model gathered from its shards (collective: every rank calls it), as a plain
    HF model on CPU on rank 0 (None elsewhere).  Call after the driver's finalize."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from transformers import AutoModelForCausalLM

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not is_main():
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

    from pdp_gpt2.atomic import atomic_write_json

    msd, osd = get_state_dict(model, optimizer)
    dcp.save({"model": msd, "optim": osd}, checkpoint_id=str(path))
    barrier()
    if is_main():
        atomic_write_json(Path(path) / "pdp_state.json", driver.state_dict() if driver is not None else {})
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
        driver.load_state_dict(json.loads((Path(path) / "pdp_state.json").read_text()))
