"""The per-step threshold refresh alone: every PDP threshold (or gmp keep-mask) of a GPT-2-shaped
model recomputed after a simulated optimizer step, timed, with its host synchronisations counted.

    python benchmarks/threshold_refresh.py                       # GPT-2 small, CPU
    python benchmarks/threshold_refresh.py --device cuda --json out.json

Each round moves every target weight by a small random step (what AdamW does to them), then
times ``pruner.step()`` (the refresh) alone.  On CUDA, host synchronisations are counted with
``torch.cuda.set_sync_debug_mode("warn")``, which warns once per operation that waits for the
device (item/tolist, nonzero, blocking copies to the host); on CPU that mode does not apply and
tests/pdp/test_select.py counts them with a dispatch probe instead.  Every refreshed threshold is
then checked against the definition (``mask.threshold`` on the whole tensor), bit for bit.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings

import torch

SHAPES = {"gpt2": dict(n_layer=12, n_embd=768, n_head=12), "gpt2-medium": dict(n_layer=24, n_embd=1024, n_head=16),
          "tiny": dict(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=128)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=sorted(SHAPES), default="gpt2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--method", default="pdp", help="pdp or gmp (any method with a per-step refresh)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--drift", type=float, default=1e-4, help="std of the per-step weight change (AdamW ~ lr)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    import pdp_gpt2
    from pdp_gpt2.pdp.kernels import mask as M

    dev = torch.device(args.device)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**SHAPES[args.model])).to(dev)
    pruner = pdp_gpt2.attach(model, args.method, pdp_gpt2.PDPConfig(sparsity=args.sparsity))
    pruner.set_sparsity(args.sparsity)
    weights = [pruner.original(t) for t in pruner.targets]
    gen = torch.Generator(device=dev).manual_seed(1)

    def drift():
        with torch.no_grad():
            for w in weights:
                w.add_(torch.randn(w.shape, generator=gen, device=dev) * args.drift)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    times, syncs = [], []
    for r in range(args.rounds + 3):  # 3 warm-up rounds (compile, first brackets)
        drift()
        sync()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("warn")
            t0 = time.perf_counter()
            pruner.step()
            sync()
            elapsed = time.perf_counter() - t0
            if dev.type == "cuda":
                torch.cuda.set_sync_debug_mode("default")
        if r >= 3:
            times.append(elapsed)
            syncs.append(sum("synchroniz" in str(w.message) for w in caught))
    exact = True
    if args.method == "pdp":
        for t in pruner.targets:
            w = pruner.original(t).detach()
            ref = M.threshold(w.abs(), M.num_pruned(w.numel(), pruner.layer_sparsity(t.name)))
            exact &= bool(torch.equal(pruner.mask_of(t).t, ref.to(pruner.mask_of(t).t.dtype)))
    res = {"model": args.model, "device": str(dev), "method": args.method, "targets": len(weights),
           "entries": sum(w.numel() for w in weights), "refresh_ms_median": 1e3 * statistics.median(times),
           "refresh_ms": [1e3 * t for t in times], "host_syncs_per_refresh": syncs if dev.type == "cuda" else None,
           "exact": exact, "torch": torch.__version__,
           "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None}
    print(f"{args.method} refresh of {res['targets']} tensors ({res['entries'] / 1e6:.1f} M entries) on {dev}: "
          f"median {res['refresh_ms_median']:.2f} ms"
          + (f", host syncs per refresh {sorted(set(syncs))}" if dev.type == "cuda" else "")
          + f", thresholds exact: {exact}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    if not exact:
        sys.exit(1)


if __name__ == "__main__":
    main()
