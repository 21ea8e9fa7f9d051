"""PDP under FSDP2 versus PDP under DDP: step time as a ratio in one run, and what the sharded
threshold selection sends per step (docs/performance.md, "Sharded").

Run under torchrun (gloo on CPU, NCCL on GPUs)::

    OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node 2 benchmarks/sharded_step.py --steps 30

Each rank holds two copies of the same model with PDP attached: one wrapped in DDP, one
fully_shard-ed (each transformer block, then the root; pdp_gpt2.fsdp.shard_model).
After a warm-up they take training steps in alternating order (A B, B A, ...) so drift of a
shared machine hits both alike; a step is forward, backward, AdamW, zero_grad and
``pruner.step()`` (thresholds: local under DDP, all-reduced histograms under FSDP).  Prints
JSON: median step seconds of each and of its threshold refresh (pruner.step) alone, the median of
per-round FSDP/DDP ratios, and per step the
all-reduce calls and bytes the selection made against the bytes of the pruned weights.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.distributed as dist


def build(n_layer: int, n_embd: int, seed: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=max(1, n_embd // 64), vocab_size=512,
                     n_positions=128, bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per variant")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    ap.add_argument("--n_layer", type=int, default=2, help="GPT-2 blocks")
    ap.add_argument("--n_embd", type=int, default=128, help="GPT-2 width")
    ap.add_argument("--batch", type=int, default=4, help="sequences per rank per step")
    ap.add_argument("--seq", type=int, default=64, help="tokens per sequence")
    ap.add_argument("--sparsity", type=float, default=0.75, help="PDP target sparsity")
    args = ap.parse_args()

    from pdp_gpt2.pdp.kernels import sharded
    from pdp_gpt2.pdp.core.attach import attach
    from pdp_gpt2.fsdp import shard_model

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = dist.get_rank()
    runs = {}
    for name in ("ddp", "fsdp"):
        model = build(args.n_layer, args.n_embd, seed=0)
        pruner = attach(model, "pdp", sparsity=args.sparsity)
        weight_bytes = sum(pruner.original(t).numel() * pruner.original(t).element_size() for t in pruner.targets)
        if name == "fsdp":
            shard_model(model)
            wrapped = model
        else:
            wrapped = torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        runs[name] = {"model": wrapped, "pruner": pruner, "opt": opt, "times": [], "select": [],
                      "weight_bytes": weight_bytes}

    gen = torch.Generator().manual_seed(rank)

    def step(run) -> float:
        x = torch.randint(0, 512, (args.batch, args.seq), generator=gen)
        dist.barrier()
        t0 = time.perf_counter()
        run["model"](input_ids=x, labels=x).loss.backward()
        run["opt"].step()
        run["opt"].zero_grad()
        t1 = time.perf_counter()
        run["pruner"].step()
        run["select"].append(time.perf_counter() - t1)
        dist.barrier()
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        for run in runs.values():
            step(run)
    before = dict(sharded.comm)
    order = ["ddp", "fsdp"]
    for i in range(args.steps):
        for name in (order if i % 2 == 0 else order[::-1]):
            runs[name]["times"].append(step(runs[name]))
    comm = {k: (sharded.comm[k] - before[k]) / args.steps for k in sharded.comm}
    ratios = [f / d for f, d in zip(runs["fsdp"]["times"], runs["ddp"]["times"])]
    if rank == 0:
        print(json.dumps({
            "world_size": dist.get_world_size(), "backend": dist.get_backend(), "args": vars(args),
            "step_s": {k: statistics.median(r["times"]) for k, r in runs.items()},
            "threshold_refresh_s": {k: statistics.median(r["select"][args.warmup:]) for k, r in runs.items()},
            "fsdp_over_ddp": statistics.median(ratios),
            "selection_per_step": comm, "pruned_weight_bytes": runs["fsdp"]["weight_bytes"],
            "selection_bytes_over_weight_bytes": comm["all_reduce_bytes"] / runs["fsdp"]["weight_bytes"],
        }, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
