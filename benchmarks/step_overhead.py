"""Training-step overhead of PDP versus a dense step, and the peak memory of each.

Builds a randomly initialised GPT-2 from its config (no download: the timing of
random and pretrained weights is the same), then runs full training steps
(forward, backward, AdamW step, zero_grad, and for PDP ``pruner.step()``).

Variants (``--variants``, default ``dense,pdp``):

* ``dense``: plain fine-tuning, the reference every ratio is taken against.
* ``pdp``: ``pdp_gpt2.attach`` (the library as shipped).
* ``naive``: the straightforward PDP this library started from, kept here as the
  "before" of docs/performance.md: a parametrization computing
  ``w * sigmoid(((w/t)^2 - 1) / tau)`` as separate autograd ops, and thresholds
  by a fresh selection (``kthvalue``) per tensor after every step.  Same masks,
  same math.
* ``gmp``: gradual magnitude pruning (``pdp_gpt2.attach(model, "gmp", cfg)``), a hard
  0/1 mask, for what any pruning method pays (see the note on AdamW below).

Time: one process holds one model per variant (same init), warms each up (the
first PDP steps also compile its kernels), then runs them in alternating order
(A B C, C B A, ...) so slow drift of a shared machine hits all alike.  It
prints the median wall-clock step time of each, its ratio to dense and the
median of the per-round ratios; and the same for the process's CPU time per
step (user + system, all threads), which other processes on a shared machine
disturb less than wall-clock time (but which counts threads spinning at
barriers, so with several threads on a busy machine it inflates).

AdamW: ``--optimizer adamw-fused`` (the default; what ``pdp-gpt2 train`` and
Hugging Face's Trainer use) is one vectorized kernel.  ``--optimizer adamw`` is
torch's per-tensor loop, whose CPU ``sqrt`` of the second moment is several
times slower on exact zeros; pruned weights (gradient 0 under a hard mask,
~1e-27 under PDP) fill it with zeros, so on that path every pruning method pays
~0.15 s a step on GPT-2 small that dense training does not.

Memory: each variant is rerun in its own fresh Python subprocess that builds
the model, does ``--mem-steps`` steps and reports its peak.  On CPU the peak is
the process's resident-set high-water mark (``VmHWM`` in /proc/self/status),
which counts everything torch allocates, including the Python/torch baseline
both variants share; on CUDA it is ``torch.cuda.max_memory_allocated``.
Memory runs first, before the timing process has built any model.

    python benchmarks/step_overhead.py                          # GPT-2 small, batch 4 x 128, CPU
    python benchmarks/step_overhead.py --batch 8 --json out.json
    python benchmarks/step_overhead.py --device cuda --batch 8 --seq 1024 --precision bf16 --variants dense,pdp,gmp
    python benchmarks/step_overhead.py --state annealed --taus 0.012,0.005,0.001   # masks saturated, as late in a run

State: ``random`` times the masks of a fresh attach at the starting tau (wide, never saturated);
``annealed`` prunes to the target first and times each tau of ``--taus`` in turn, the regime the
end of a real run is in (saturated masks, where subnormal numbers would cost a CPU 15-20x).
``--model embedded`` is the bundled model (its pretrained weights; its tensors run the eager kernels).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

SHAPES = {
    "tiny": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=128, bos_token_id=0,
                 eos_token_id=0),  # for the tests
    "gpt2": dict(n_layer=12, n_embd=768, n_head=12),
    "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
}
SHAPES["embedded"] = None  # the bundled model itself (pdp_gpt2.data.models)
VARIANTS = ("dense", "pdp", "naive", "gmp")
OPTIMIZERS = {  # all torch.optim.AdamW; they differ only in implementation
    "adamw": {},  # torch's default choice
    "adamw-foreach": {"foreach": True},
    "adamw-fused": {"fused": True},
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="gpt2", help="model shape (random init)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--steps", type=int, default=12, help="timed steps per variant (after warm-up; 0: skip timing)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant first")
    p.add_argument("--sparsity", type=float, default=0.9, help="PDP target sparsity")
    p.add_argument("--variants", default="dense,pdp",
                   help=f"comma-separated, from {', '.join(VARIANTS)}; ratios are to dense (always run)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), default="adamw-fused",
                   help="AdamW implementation: fused=True (default), torch's per-tensor loop, or foreach=True")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="mixed precision as Hugging Face's Trainer runs it: fp32 weights and optimizer, the "
                        "forward and loss under torch.autocast(bf16|fp16), fp16 with a GradScaler")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--mem-steps", type=int, default=3, help="steps in each memory subprocess (0: skip memory)")
    p.add_argument("--json", metavar="PATH", help="also write the results here as JSON")
    p.add_argument("--state", choices=("random", "annealed"), default="random",
                   help="random: a fresh attach at the starting tau; annealed: pruned to the target, at each of --taus")
    p.add_argument("--taus", default="0.012,0.005,0.001", help="with --state annealed: the taus timed, in turn")
    p.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)  # internal: memory subprocess
    args = p.parse_args(argv)
    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in chosen if v not in VARIANTS]
    if bad:
        p.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(VARIANTS)}")
    args.variants = ["dense"] + [v for v in dict.fromkeys(chosen) if v != "dense"]
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def build(variant: str, args: argparse.Namespace, device: torch.device):
    """A model, its AdamW and a step function for one variant (same seed, same init)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    import pdp_gpt2

    torch.manual_seed(0)
    if SHAPES[args.model] is None:
        from pdp_gpt2.data.models import load_model_and_tokenizer

        model = load_model_and_tokenizer(args.model)[0].to(device).train()
    else:
        model = GPT2LMHeadModel(GPT2Config(**SHAPES[args.model])).to(device).train()
    pruner = None
    if variant == "pdp":
        from pdp_gpt2.cli.train import kernel_options  # PDP_GPT2_COMPILE=0 / PDP_GPT2_FLUSH=0, as in `train`

        pruner = pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=args.sparsity),
                                 kernels=kernel_options(os.environ))
        if getattr(args, "tau", None) is not None:  # --state annealed: at the target, then this tau
            pruner.set_sparsity(args.sparsity)
            pruner.set_tau(args.tau)
    elif variant == "naive":
        pruner = NaivePDP(model, args.sparsity)
    elif variant == "gmp":
        pruner = pdp_gpt2.attach(model, "gmp", pdp_gpt2.PDPConfig(sparsity=args.sparsity))
        pruner.set_sparsity(args.sparsity)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **OPTIMIZERS[args.optimizer])
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.precision]
    # fp16 needs loss scaling (Trainer's GradScaler); bf16 has float32's range and needs none
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None

    def step() -> None:
        with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
            loss = model(input_ids=ids, labels=ids).loss
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)
        if pruner is not None:
            pruner.step()

    step.pruner = pruner
    return step


def pdp_own_work(pruner, device: torch.device, reps: int = 5) -> dict:
    """Seconds of the work PDP adds to a step, timed alone (median of ``reps``): computing
    every masked weight, their backward, and refreshing every threshold, plus the masked
    weights once more for the backward's recompute.  What an A/B
    step ratio should show above 1 on a quiet machine, without the A/B's noise."""
    mods = [t.module for t in pruner.targets]
    # the upstream gradients exist before the clock starts: allocating them inside the timed backward
    # measured the kernel's page faults on fresh memory, not the kernel (5x the forward on one machine)
    upstream = [torch.full_like(pruner.original(t), 1e-3) for t in pruner.targets]
    rows = []
    for _ in range(reps + 1):  # the first is a warm-up
        sync(device)
        t0 = time.perf_counter()
        ws = [m.weight for m in mods]
        sync(device)
        t1 = time.perf_counter()
        torch.autograd.backward(ws, upstream)
        sync(device)
        t2 = time.perf_counter()
        del ws
        for m in mods:
            m.parametrizations.weight.original.grad = None
        pruner.step()
        sync(device)
        rows.append((t1 - t0, t2 - t1, time.perf_counter() - t2))
    med = [statistics.median(col) for col in zip(*rows[1:])]
    res = dict(zip(("mask_forward_s", "mask_backward_s", "thresholds_s"), med))
    # In a training step the backward computes every masked weight once more (pdp/kernels/recompute.py).
    res["recompute_s"] = res["mask_forward_s"] if pruner.recomputing else 0.0
    res["total_s"] = sum(med) + res["recompute_s"]
    return res


class _NaiveMask(torch.nn.Module):
    """The "before": PDP's soft mask as plain autograd ops (each its own pass, each
    intermediate kept for backward), threshold in a buffer."""

    def __init__(self, tau: float):
        super().__init__()
        self.tau = tau
        self.register_buffer("t2", torch.ones(()))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * torch.sigmoid((w * w / self.t2 - 1) / self.tau)


class NaivePDP:
    """Attach _NaiveMask to the same targets as pdp_gpt2.attach; step() recomputes every
    threshold from scratch with ``mask.threshold`` (the definition the fast path must match)."""

    def __init__(self, model: torch.nn.Module, sparsity: float, tau: float = 0.02):
        from torch.nn.utils import parametrize

        from pdp_gpt2.pdp.core.targets import find_targets

        self.sparsity, self.modules = sparsity, [t.module for t in find_targets(model)]
        for m in self.modules:
            parametrize.register_parametrization(m, "weight", _NaiveMask(tau).to(m.weight.device))
        self.step()

    @torch.no_grad()
    def step(self) -> None:
        from pdp_gpt2.pdp.kernels import mask as M

        for m in self.modules:
            w = m.parametrizations.weight.original
            # the definition: a fresh kthvalue on |w| (plus a count and a min for the midpoint)
            t = M.threshold(w.abs(), M.num_pruned(w.numel(), self.sparsity))
            m.parametrizations.weight[0].t2.copy_(t * t)


def timed(step, device: torch.device) -> tuple[float, float, int]:
    """(wall-clock seconds, process CPU seconds, minor page faults) of one step.

    Minor faults are pages the kernel handed the process fresh (and zeroed) during the step:
    memory the allocator gave back after the last step and took again.  On CPU they are where
    a larger peak costs time (docs/performance.md).
    """
    sync(device)
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0, c0 = time.perf_counter(), time.process_time()
    step()
    sync(device)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0


def _summary(times: dict[str, list[float]]) -> dict:
    """Medians, ratio of each median to dense's, and the median of per-round ratios."""
    med = {v: statistics.median(ts) for v, ts in times.items()}
    base = times["dense"]
    return {"median_s": med, "ratio": {v: med[v] / med["dense"] for v in times if v != "dense"},
            "ratio_paired": {v: statistics.median(y / x for x, y in zip(base, ts))
                             for v, ts in times.items() if v != "dense"}}


def measure_time(args: argparse.Namespace, device: torch.device) -> dict:
    variants = args.variants
    steps = {v: build(v, args, device) for v in variants}
    for _ in range(args.warmup):
        for v in variants:
            steps[v]()
    wall = {v: [] for v in variants}
    cpu = {v: [] for v in variants}
    faults = {v: [] for v in variants}
    for i in range(args.steps):
        for v in (variants if i % 2 == 0 else variants[::-1]):  # A B C, C B A, ...
            w, c, f = timed(steps[v], device)
            wall[v].append(w)
            cpu[v].append(c)
            faults[v].append(f)
        line = "  ".join(f"{v} {wall[v][-1]:.3f}s" for v in variants)
        print(f"  round {i + 1}/{args.steps}: {line}", file=sys.stderr, flush=True)
    res = {"wall_s": wall, "cpu_s": cpu, "wall": _summary(wall), "cpu": _summary(cpu), "minor_faults": faults,
           "minor_faults_median": {v: statistics.median(f) for v, f in faults.items()}}
    if "pdp" in steps:
        res["pdp_own_work"] = pdp_own_work(steps["pdp"].pruner, device)
    return res


def peak_rss() -> int:
    """This process's resident-set high-water mark in bytes.

    VmHWM belongs to the process's own address space, so it starts fresh at exec.
    ru_maxrss does not: Linux carries the parent's high-water mark across
    fork/vfork + exec, so a child of a big parent would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux; macOS: bytes


def child(args: argparse.Namespace) -> None:
    """Memory subprocess: build one variant, run a few steps, print its peak as JSON."""
    device = torch.device(args.device)
    step = build(args.child, args, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.mem_steps):
        step()
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()
    print(json.dumps({"peak_bytes": peak}))


def measure_memory(args: argparse.Namespace) -> dict:
    peaks = {}
    for v in args.variants:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", v, "--model", args.model,
               "--batch", str(args.batch), "--seq", str(args.seq), "--device", args.device,
               "--sparsity", str(args.sparsity), "--threads", str(args.threads),
               "--optimizer", args.optimizer, "--mem-steps", str(args.mem_steps), "--precision", args.precision]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[v] = json.loads(out.strip().splitlines()[-1])["peak_bytes"]
    kind = "cuda max_memory_allocated" if args.device.startswith("cuda") else "process peak RSS (VmHWM)"
    return {"kind": kind, "peak_bytes": peaks,
            "ratio": {v: peaks[v] / peaks["dense"] for v in args.variants if v != "dense"}}


def _provenance() -> dict:
    import pdp_gpt2

    src = os.path.dirname(pdp_gpt2.__file__)
    try:
        rev = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", src, "status", "--porcelain", "--", "."],
                                    capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        rev, dirty = None, None
    return {"pdp_gpt2": src, "git": rev, "pdp_gpt2_modified": dirty, "torch": torch.__version__,
            "machine": platform.machine(), "cpus": os.cpu_count(), **_hardware()}


def _hardware() -> dict:
    """What a timing depends on: the CPU model and its vector ISA, the load when it started, the GPU."""
    out = {"load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")), None)
        flags = next((ln.split(":", 1)[1].split() for ln in info.splitlines() if ln.startswith("flags")), [])
        out["cpu_model"] = model
        out["cpu_isa"] = "avx512" if "avx512f" in flags else ("avx2" if "avx2" in flags else "other")
        out["cpu_avx_flags"] = sorted(f for f in flags if f.startswith("avx"))
    except OSError:
        pass
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
        out["cuda"] = torch.version.cuda
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        return child(args)
    device = torch.device(args.device)
    print(f"{args.model} batch {args.batch} x {args.seq} on {device} ({torch.get_num_threads()} threads), "
          f"{args.precision}, {args.optimizer}, sparsity {args.sparsity}; {', '.join(args.variants)}; {args.warmup} warm-up + "
          f"{args.steps} timed steps each, alternating order", file=sys.stderr, flush=True)
    res = {"model": args.model, "batch": args.batch, "seq": args.seq, "device": str(device),
           "variants": args.variants, "precision": args.precision,
           "threads": torch.get_num_threads(), "optimizer": args.optimizer, "sparsity": args.sparsity,
           "steps": args.steps, "warmup": args.warmup, "mem_steps": args.mem_steps,
           "malloc_env": {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}, **_provenance()}
    if args.mem_steps > 0:  # first, while this process is still small
        res["memory"] = measure_memory(args)
    if args.steps > 0 and args.state == "annealed":
        res["state"], res["time_by_tau"] = "annealed", {}
        for tau in [float(x) for x in args.taus.split(",") if x]:
            args.tau = tau
            t = res["time_by_tau"][str(tau)] = measure_time(args, device)
            w = t["wall"]
            print(f"tau {tau:g}: dense {w['median_s']['dense']:.3f}s  " + "  ".join(
                f"{v} {w['median_s'][v]:.3f}s ratio {w['ratio'][v]:.3f} (paired {w['ratio_paired'][v]:.3f})"
                for v in args.variants[1:]), flush=True)
    elif args.steps > 0:
        res["time"] = measure_time(args, device)
        for kind in ("wall", "cpu"):
            t = res["time"][kind]
            print(f"median step ({kind}): dense {t['median_s']['dense']:.3f}s")
            for v in args.variants[1:]:
                print(f"  {v:6s} {t['median_s'][v]:.3f}s  ratio {t['ratio'][v]:.3f}  "
                      f"(median of paired ratios {t['ratio_paired'][v]:.3f})")
        mf = res["time"]["minor_faults_median"]
        print("minor page faults per step (median): " + ", ".join(f"{v} {mf[v]:,.0f}" for v in args.variants))
        if (own := res["time"].get("pdp_own_work")) is not None:
            dense = res["time"]["wall"]["median_s"]["dense"]
            print(f"PDP's own work per step, timed alone: masked weights {own['mask_forward_s']:.3f}s + "
                  f"their backward {own['mask_backward_s']:.3f}s + thresholds {own['thresholds_s']:.3f}s "
                  f"+ recomputed in backward {own['recompute_s']:.3f}s "
                  f"= {own['total_s']:.3f}s ({own['total_s'] / dense:.1%} of the dense step)")
    if args.mem_steps > 0:
        m = res["memory"]
        print(f"peak memory [{m['kind']}]: dense {m['peak_bytes']['dense'] / 2**20:.0f} MiB")
        for v in args.variants[1:]:
            print(f"  {v:6s} {m['peak_bytes'][v] / 2**20:.0f} MiB  ratio {m['ratio'][v]:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
