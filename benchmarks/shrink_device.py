"""The physical shrink's speed on an accelerator: the dense GPT-2 small shape against its shrinks.

    python benchmarks/shrink_device.py --device cuda --json OUT.json     # benchmarks/gpu_check.sh runs it

benchmarks/inference.py --shrink measures the CPU (wall and CPU time, thread counts); this is the
same comparison where a GPU is at hand: the same models (GPT-2 small's shape, random init, 25%,
50% and 75% of every MLP's neurons removed by export/shrink.py), timed with the device
synchronised around each call, the variants interleaved round by round, medians. Prefill is a
batch of ``--batch`` x ``--length`` tokens; decode one token on a ``--past``-token KV cache at
batch 1. Beside each figure: the share of the parameters a token touches that the shrink removes
(inference.py's definition) and time saved / share (target 0.85 on prefill).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference as I  # noqa: E402  (the models, their shrinks and the share they remove)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def timed(fn, device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


@torch.no_grad()
def measure(models: dict, device, batch: int, length: int, past: int, reps: int, vocab: int) -> dict:
    """{(label, 'prefill' | 'decode'): median seconds}, every variant once per round."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, length), generator=g).to(device)
    ctx = torch.randint(0, vocab, (1, past), generator=g).to(device)
    nxt = torch.randint(0, vocab, (1, 1), generator=g).to(device)
    caches, kw = {}, "past_key_values"
    for k, m in models.items():
        out = m(ctx, use_cache=True)
        kw = "cache" if "cache" in out else "past_key_values"  # transformers 5.x renamed it
        caches[k] = out[kw]
    calls = {}
    for k, m in models.items():
        calls[(k, "prefill")] = lambda m=m: m(ids, use_cache=False)
        calls[(k, "decode")] = lambda m=m, k=k: _decode(m, nxt, caches[k], kw, past)
    for fn in calls.values():  # warm-up: kernels chosen, memory pools filled
        timed(fn, device)
    times = {key: [] for key in calls}
    for _ in range(reps):
        for key, fn in calls.items():
            times[key].append(timed(fn, device))
    return {key: statistics.median(v) for key, v in times.items()}


def _decode(model, nxt, cache, kw: str, past: int):
    """One token on the ``past``-token cache, which is cropped back after (a Cache grows in place)."""
    out = model(nxt, use_cache=True, **{kw: cache})
    if hasattr(cache, "crop"):  # negative: drop the token just added (older GPT-2 tuples do not grow)
        cache.crop(past - cache.get_seq_length())
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bf16", choices=list(DTYPES))
    p.add_argument("--fractions", default="0.25,0.5,0.75")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--past", type=int, default=128)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--tiny", action="store_true", help="a 2-layer GPT-2 (a check of the script, not a figure)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    (name, model), = I.shrink_models(["gpt2"], args.tiny)
    models, share, gap = I.shrink_variants(model, [float(f) for f in args.fractions.split(",")])
    models = {k: m.to(device=device, dtype=DTYPES[args.dtype]).eval() for k, m in models.items()}
    med = measure(models, device, args.batch, args.length, args.past, args.reps, model.config.vocab_size)
    rows = []
    for label, sh in share.items():
        for what in ("prefill", "decode"):
            d, s = med[("dense", what)], med[(label, what)]
            rows.append({"removed": label, "measure": what, "dense_ms": d * 1e3, "shrunk_ms": s * 1e3,
                         "saved": 1 - s / d, "share": sh, "saved_over_share": (1 - s / d) / sh})
    print(f"| {name}, {args.dtype}, {device} | removed | measure | dense ms | shrunk ms | saved | share | saved / share |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        shape = f"{args.batch}x{args.length}" if r["measure"] == "prefill" else f"1x1 on {args.past}"
        print(f"| | {r['removed']} | {r['measure']} {shape} | {r['dense_ms']:.2f} | {r['shrunk_ms']:.2f} | "
              f"{r['saved']:.1%} | {r['share']:.1%} | {r['saved_over_share']:.2f} |")
    out = {"benchmark": "shrink_device", "model": name, "device": torch.cuda.get_device_name(device)
           if device.type == "cuda" else str(device), "dtype": args.dtype, "batch": args.batch, "length": args.length,
           "past": args.past, "reps": args.reps, "rows": rows, "max_rel_logit_gap": gap, "target": I.TARGET,
           "torch": torch.__version__}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
