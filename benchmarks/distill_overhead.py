"""What ``--distill`` costs per training step: time and peak memory, distilled step vs plain step.

A plain step is what every run does (student forward with labels, backward, fused AdamW step,
zero_grad); a distilled step adds what ``DistillMixin.compute_loss`` adds: the teacher's forward
under ``torch.no_grad()`` (a frozen copy of the starting model, eval mode) and the KL term
(``pdp_gpt2.train.distill.distill_loss``: log-softmax of both logits over the vocabulary) with its
backward.  No masks: the teacher's cost is the same whatever the method.

Time: one process holds both, warms each up, then alternates them (A B, B A, ...) and prints the
median step time of each and the median of the per-round ratios.  Memory: each variant in a fresh
subprocess, its resident-set high-water mark (VmHWM; CUDA: max_memory_allocated).  The machine
(CPU model, AVX2 / AVX-512, load average) is printed with the numbers.

    python benchmarks/distill_overhead.py                 # GPT-2 small shape (random init), batch 4 x 128, CPU
    python benchmarks/distill_overhead.py --model embedded --rounds 12
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {"gpt2": dict(n_layer=12, n_embd=768, n_head=12), "tiny": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=512)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpt2", help="a shape (gpt2, tiny: random init) or 'embedded' (the bundled model)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--rounds", type=int, default=8, help="timed rounds (each: one step of each variant)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--mem-steps", type=int, default=2)
    p.add_argument("--json", help="also write the result here")
    p.add_argument("--child", choices=("plain", "distill"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build_model(name: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    if name == "embedded":
        from pdp_gpt2.data.models import load_model_and_tokenizer

        return load_model_and_tokenizer("embedded")[0].train()
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**SHAPES[name])).train()


def make_step(variant: str, args):
    from pdp_gpt2.train.distill import distill_loss, frozen_copy

    model = build_model(args.model)
    teacher = frozen_copy(model) if variant == "distill" else None
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen)

    def step() -> None:
        out = model(input_ids=ids, labels=ids)
        loss = out.loss
        if teacher is not None:
            with torch.no_grad():
                t_logits = teacher(input_ids=ids).logits
            loss = distill_loss(loss, out.logits, t_logits, ids, args.alpha, 2.0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def machine() -> dict:
    info = {}
    try:
        for line in open("/proc/cpuinfo"):  # the first CPU's lines
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model, flags = info.get("model name", platform.processor()), set(info.get("flags", "").split())
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "torch": torch.__version__, "revision": rev}


def measure_time(args) -> dict:
    steps = {v: make_step(v, args) for v in ("plain", "distill")}
    for _ in range(args.warmup):
        for s in steps.values():
            s()
    times = {v: [] for v in steps}
    for r in range(args.rounds):
        for v in (("plain", "distill") if r % 2 == 0 else ("distill", "plain")):
            t0 = time.perf_counter()
            steps[v]()
            times[v].append(time.perf_counter() - t0)
    ratios = [d / p for d, p in zip(times["distill"], times["plain"])]
    return {"median_s": {v: round(statistics.median(t), 4) for v, t in times.items()},
            "ratio_of_medians": round(statistics.median(times["distill"]) / statistics.median(times["plain"]), 3),
            "ratio_paired_median": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)]}


def peak_rss() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


def measure_memory(args) -> dict:
    peaks = {}
    for v in ("plain", "distill"):
        cmd = [sys.executable, __file__, "--child", v, "--model", args.model, "--batch", str(args.batch),
               "--seq", str(args.seq), "--mem-steps", str(args.mem_steps)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        peaks[v] = int(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.split()[-1])
    return {"peak_bytes": peaks, "ratio": round(peaks["distill"] / peaks["plain"], 3)}


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        step = make_step(args.child, args)
        for _ in range(args.mem_steps):
            step()
        print(peak_rss())
        return
    result = {"model": args.model, "batch": args.batch, "seq": args.seq, "alpha": args.alpha,
              "machine_before": machine(), "memory": measure_memory(args), "time": measure_time(args)}
    result["machine_after"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
