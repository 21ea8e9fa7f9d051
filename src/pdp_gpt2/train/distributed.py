"""Several processes, one run: who writes, when ranks wait for each other, what is refused.

Under DDP every rank holds the whole model and the weights are bitwise equal after each optimizer
step, so the thresholds each rank computes agree with no communication. Two things need the ranks
to agree: files (rank 0 alone writes and holds the lock; ``barrier()`` orders "everyone has read
the run directory" before "rank 0 changes it"), and stopping (a signal or a NaN may reach one
rank only, and ``max_over_ranks`` makes the decision collective). The ``train`` command does not
shard: Trainer and accelerate would apply FSDP without our attach-before-shard order, and FSDP1
and DeepSpeed rank a flat shard as if it were the tensor, so ``refuse_sharded`` says so in one
line. FSDP2 works in your own loop (:mod:`pdp_gpt2.fsdp`).
"""
from __future__ import annotations

import os

import torch

from pdp_gpt2.errors import UsageError

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
                             "your own loop (attach, then pdp_gpt2.fsdp.shard_model; docs/performance.md, "
                             "Sharded)")


def _active() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and world_size() > 1


def max_over_ranks(*values: float) -> list[float]:
    """Each value's maximum over all ranks (the values themselves in one process)."""
    if not _active():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values])
    if "nccl" in str(torch.distributed.get_backend()):
        t = t.cuda()
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.tolist()
