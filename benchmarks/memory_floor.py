"""The memory-traffic floor of PDP's own work per step: how long the plain passes over the target
weights take that any soft mask needs, on this machine.

A soft-masked step has to read every target weight and write its masked copy (forward), read the
weight and the masked copy's gradient and write the weight's gradient (backward), and read every
weight once more to refresh the thresholds.  Even with perfect fusion that is 6 tensor-sized
transfers per step; with the masked copy recomputed in backward instead of kept (this library's
default on CPU, pdp/kernels/recompute.py) it is 8.  This script times the elementary passes with torch's
own kernels (no math in them, so they run at memory speed) over GPT-2 small's 48 target weights
(85 M entries) and prints the floor, to set against a dense step from benchmarks/step_overhead.py.

    python benchmarks/memory_floor.py --threads 2 [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

# GPT-2 small's target weights per block (Conv1D, in x out): c_attn, c_proj, c_fc, mlp.c_proj; 12 blocks
SHAPES = [(768, 2304), (768, 768), (768, 3072), (3072, 768)] * 12


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it (platform.processor() is empty on Linux)."""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def timed(fn, reps: int, sync) -> float:
    fn()  # warm: pages touched, kernels chosen
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    ws = [torch.randn(s, device=dev) for s in SHAPES]
    outs = [torch.empty_like(w) for w in ws]
    gs = [torch.randn(s, device=dev) for s in SHAPES]
    n = sum(w.numel() for w in ws)

    def read():  # one read of every weight (the threshold refresh's counting pass, at best)
        for w in ws:
            w.amax()

    def read_write():  # read w, write a masked copy (forward; or the recompute in backward)
        for w, o in zip(ws, outs):
            torch.mul(w, 0.5, out=o)

    def read2_write():  # read w and the upstream gradient, write the weight's gradient (backward)
        for w, g, o in zip(ws, gs, outs):
            torch.mul(w, g, out=o)

    t = {name: timed(fn, args.reps, sync) for name, fn in
         (("read", read), ("read_write", read_write), ("read2_write", read2_write))}
    floor_kept = t["read_write"] + t["read2_write"] + t["read"]  # 6 transfers
    floor_recomputed = floor_kept + t["read_write"]  # 8 transfers
    gbs = 2 * n * 4 / t["read_write"] / 1e9
    res = {"entries": n, "threads": args.threads, "device": str(dev), "seconds": t,
           "read_write_GB_per_s": round(gbs, 2),
           "floor_s": {"masked_copy_kept": floor_kept, "masked_copy_recomputed": floor_recomputed},
           "machine": {"cpu": cpu_model(), "torch": torch.__version__,
                       "load_average": [round(x, 2) for x in os.getloadavg()],
                       "cpu_capability": torch.backends.cpu.get_cpu_capability()}}
    print(f"{n:,} target entries, {args.threads} threads, {dev}; load average {res['machine']['load_average']}")
    for k, v in t.items():
        print(f"  {k:12s} {v * 1e3:7.1f} ms")
    print(f"  read+write at {gbs:.1f} GB/s")
    print(f"  floor of PDP's own work per step: {floor_kept * 1e3:.1f} ms (masked copy kept), "
          f"{floor_recomputed * 1e3:.1f} ms (recomputed in backward)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
