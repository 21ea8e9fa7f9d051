"""Sizes and CPU inference speed of exported PDP models, dense vs the sparse runtime, GPT-2-small shape.

    python benchmarks/inference.py --json inference.json   # speed (90%/95%, 1 and 2 threads) + sizes
    python benchmarks/inference.py --skip-sizes             # speed only
    python benchmarks/inference.py --tiny                   # a 2-layer model in seconds: does the script run?
    python benchmarks/inference.py --shrink --json docs/data/shrink_speed_<cpu>.json  # the physical shrink

No download: the model is GPT2Config() (GPT-2 small's shape, 124M) with random
weights, pruned with ``pdp_gpt2.attach(...).finalize()`` - speed depends on shapes
and sparsity, not on what the weights learned.  Per sparsity it compares

  dense   from_pretrained of the finalized directory (what every HF user runs);
  sparse  load_compressed(export, runtime="sparse"): pruned layers on int32 CSR kernels.

Measures (batch 1): decode = one new token on a ``--past``-token KV cache, repeated;
prefill N = N prompt tokens, no cache, last position's logits.  Dense and sparse run
interleaved after a warm-up, medians reported; ratios inside one run mean more than
absolute seconds on a shared machine.  The memory-traffic limit is the weight bytes
one decode step must read, dense / sparse, LM head (tied, dense) included.

``--shrink`` compares instead the dense model with its physical shrink (export/shrink.py) at 25%,
50% and 75% of every MLP's neurons removed, all interleaved, in plain transformers: prefill =
a batch of 8 x 128 tokens with every position's logits (what perplexity evaluation runs), decode
as above.  Beside each figure, the share of the parameters a token touches that the shrink
removes: every matmul weight and bias, LM head included; embedding lookups (one row read) and
layer norms left out.  Models: GPT-2 small's shape (random init) and the embedded model.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
import copy
import platform
import re
import subprocess

from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import pdp_gpt2
from pdp_gpt2.export.sparse import decode_weight_bytes
from pdp_gpt2.export.shrink import shrink
from pdp_gpt2.export.writer import export, pruned_tensors
from pdp_gpt2.pdp.patterns.structures import mlp_structures
from pdp_gpt2.pdp.core.targets import PRUNABLE

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()

TINY = dict(n_layer=2, n_embd=64, n_head=2, vocab_size=512, n_positions=128)


def pruned_model(root: Path, name: str, tiny: bool = False, **cfg) -> Path:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**TINY) if tiny else GPT2Config()).eval()
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(**cfg)).finalize()
    model.save_pretrained(root / name)
    return root / name


def _quiet_export(src: Path, out: Path, fmt: str = "compressed", **kw) -> dict:
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # export may print notes; the tables are the output
        return export(src, out, fmt, overwrite=True, **kw)


def size_rows(root: Path, tiny: bool) -> list[tuple]:
    """(case, target dense MB, target exported MB, target ratio, whole dense MB, whole exported MB, whole ratio)."""
    cases = [("90% unstructured, fp32 values (exact)", dict(sparsity=0.9), "compressed", "auto"),
             ("90% unstructured, fp16 values", dict(sparsity=0.9), "compressed", "fp16"),
             ("90% + 8-bit quantization masking (exact codes)", dict(sparsity=0.9, quantize=True, bits=8),
              "compressed", "auto"),
             ("90% + 4-bit quantization masking (exact codes)", dict(sparsity=0.9, quantize=True, bits=4),
              "compressed", "auto"),
             ("2:4, fp32 values (exact)", dict(sparsity=0.5, pattern="2:4"), "2:4", "auto"),
             ("2:4, fp16 values", dict(sparsity=0.5, pattern="2:4"), "2:4", "fp16")]
    rows, made = [], {}
    for label, cfg, fmt, values in cases:
        key = repr(cfg)
        if key not in made:
            made[key] = pruned_model(root, f"src{len(made)}", tiny, **cfg)
        rep = _quiet_export(made[key], root / "out", fmt, values=values)
        t, w = rep["target_weights"], rep["whole_model"]
        rows.append((label, t["dense_bytes"] / 1e6, t["exported_bytes"] / 1e6, t["ratio"],
                     w["dense_bytes"] / 1e6, w["exported_bytes"] / 1e6, w["ratio"]))
        shutil.rmtree(root / "out")
    return rows


# ---- speed --------------------------------------------------------------------------------


@torch.no_grad()
def timings(models: dict, lengths: list[int], reps: int, past: int, decode_steps: int, vocab: int,
            batch: int = 1, keep: int = 1, seconds: float = 0.0) -> dict:
    """{(variant, measure): median wall seconds, (variant, 'cpu ' + measure): median process CPU seconds};
    variants interleaved within every repetition, ``reps`` of them and more until ``seconds`` have passed
    (small models: more samples at no cost).  CPU time moves less than wall time with other jobs' load.
    Prefill runs ``batch`` rows and keeps the last ``keep`` positions' logits (0: all); decode one row."""
    g = torch.Generator().manual_seed(0)
    ids = {n: torch.randint(0, vocab, (batch, n), generator=g) for n in lengths}
    ids["decode"] = torch.randint(0, vocab, (1, past + 1), generator=g)
    caches, kw = {}, "past_key_values"
    for name, m in models.items():  # one KV cache of `past` tokens per model, cropped back after each step
        out = m(ids["decode"][:, :past], use_cache=True)
        kw = "cache" if "cache" in out else "past_key_values"  # transformers 5.x renamed it
        caches[name] = out[kw]
    results: dict = {}

    def once(name, m, record):
        def timed(key, f):
            t, c = time.perf_counter(), time.process_time()
            f()
            record(name, key, time.perf_counter() - t)
            record(name, f"cpu {key}", time.process_time() - c)

        for n in lengths:  # older GPT-2s lack logits_to_keep; 0 (all) is their only behaviour
            timed(f"prefill {n}", lambda: m(ids[n], use_cache=False, **({"logits_to_keep": keep} if keep else {})))
        for _ in range(decode_steps):
            timed("decode", lambda: m(ids["decode"][:, past:], use_cache=True, **{kw: caches[name]}))
            if hasattr(caches[name], "crop"):  # a Cache grows in place (older GPT-2s' tuples do not)
                caches[name].crop(past - caches[name].get_seq_length())  # negative: drop the token just added

    for name, m in models.items():  # warm-up
        once(name, m, lambda *a: None)
    start, done = time.perf_counter(), 0
    while done < reps or time.perf_counter() - start < seconds:
        done += 1
        for name, m in models.items():
            once(name, m, lambda v, k, s: results.setdefault((v, k), []).append(s))
    return {k: statistics.median(v) for k, v in results.items()}


def speed_rows(med: dict, lengths: list[int], sparsity: float, threads: int) -> list[dict]:
    rows = []
    for measure, tokens in [("decode", 1)] + [(f"prefill {n}", n) for n in lengths]:
        d, s = tokens / med[("dense", measure)], tokens / med[("sparse", measure)]
        rows.append({"sparsity": sparsity, "threads": threads, "measure": measure, "dense_tps": d,
                     "sparse_tps": s, "ratio": s / d})
    return rows


def speed_table(rows: list[dict]) -> str:
    lines = ["| sparsity | threads | measure | dense tokens/s | sparse tokens/s | sparse / dense |",
             "|---:|---:|---|---:|---:|---:|"]
    lines += [f"| {r['sparsity']:.0%} | {r['threads']} | {r['measure']} | {r['dense_tps']:,.1f} | "
              f"{r['sparse_tps']:,.1f} | {r['ratio']:.2f}x |" for r in rows]
    return "\n".join(lines)


def traffic_table(traffic: list[dict], rows: list[dict]) -> str:
    lines = ["| sparsity | dense MB / decode token | sparse MB / decode token | limit (dense / sparse bytes) | "
             "measured decode speedup (threads) | share of the limit |", "|---:|---:|---:|---:|---|---|"]
    for t in traffic:
        got = [r for r in rows if r["sparsity"] == t["sparsity"] and r["measure"] == "decode"]
        meas = ", ".join(f"{r['ratio']:.2f}x ({r['threads']})" for r in got)
        share = ", ".join(f"{r['ratio'] / t['limit']:.0%}" for r in got)
        lines.append(f"| {t['sparsity']:.0%} | {t['dense_bytes'] / 1e6:.1f} | {t['sparse_bytes'] / 1e6:.1f} | "
                     f"{t['limit']:.2f}x | {meas} | {share} |")
    return "\n".join(lines)


def check_logits(models: dict, vocab: int) -> float:
    ids = torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return (models["dense"](ids).logits - models["sparse"](ids).logits).abs().max().item()


def run_speed(root: Path, args, lengths: list[int]) -> dict:
    rows, traffic, diffs = [], [], {}
    vocab = (TINY if args.tiny else GPT2Config().to_dict())["vocab_size"]
    for sparsity in [float(s) for s in args.sparsities.split(",")]:
        src = pruned_model(root, f"speed{sparsity}", args.tiny, sparsity=sparsity)
        _quiet_export(src, root / f"exported{sparsity}")
        models = {"dense": AutoModelForCausalLM.from_pretrained(src).eval(),
                  "sparse": pdp_gpt2.load_compressed(root / f"exported{sparsity}", runtime="sparse")}
        diffs[sparsity] = check_logits(models, vocab)
        db, sb = decode_weight_bytes(models["dense"]), decode_weight_bytes(models["sparse"])
        traffic.append({"sparsity": sparsity, "dense_bytes": db, "sparse_bytes": sb, "limit": db / sb,
                        "pruned_tensors": len(pruned_tensors(models["dense"]))})
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            med = timings(models, lengths, args.reps, args.past, args.decode_steps, vocab)
            rows.extend(speed_rows(med, lengths, sparsity, threads))
            print(speed_table([r for r in rows if r["sparsity"] == sparsity and r["threads"] == threads]),
                  flush=True)
        del models
    return {"rows": rows, "traffic": traffic, "max_abs_logit_diff": diffs}


# ---- the physical shrink -------------------------------------------------------------------

TARGET = 0.85  # prefill: time saved should be at least this share of the parameter share removed


def zero_neurons(model, fraction: float, seed: int = 0):
    """``model`` with round(fraction x width) neurons of every MLP zeroed (other ones per MLP), both sides."""
    for i, s in enumerate(mlp_structures(model)):
        idx = torch.randperm(s.width, generator=torch.Generator().manual_seed(seed + i))[:round(fraction * s.width)]
        for m in s.members:
            m.weight.data.index_fill_(m.axis, idx, 0.0)
            if m.bias:
                m.module.bias.data[idx] = 0.0
    return model


def touched_parameters(model) -> int:
    """Parameters one token's forward multiplies by: every Linear/Conv1D weight and bias, the LM head
    included (a tied one once); embedding lookups and layer norms left out."""
    return decode_weight_bytes(model) // next(model.parameters()).element_size()


def shrink_variants(model, fractions: list[float]) -> tuple[dict, dict, dict]:
    """({'dense': model, '25%': its shrink, ...}, {label: parameter share removed}, {label: logit gap})."""
    from pdp_gpt2.export.shrink import logit_gap

    models, share, gap = {"dense": model}, {}, {}
    for f in fractions:
        zeroed = zero_neurons(copy.deepcopy(model), f)
        small, _ = shrink(zeroed)
        label = f"{f:.0%}"
        models[label], gap[label] = small, logit_gap(zeroed, small)
        share[label] = 1 - touched_parameters(small) / touched_parameters(model)
        del zeroed
    return models, share, gap


def shrink_rows(med: dict, share: dict, model: str, threads: int, prefill: str) -> list[dict]:
    rows = []
    for label, sh in share.items():
        for measure in (prefill, "decode"):
            d, s = med[("dense", measure)], med[(label, measure)]
            dc, sc = med[("dense", f"cpu {measure}")], med[(label, f"cpu {measure}")]
            rows.append({"model": model, "removed": label, "threads": threads, "measure": measure,
                         "dense_ms": d * 1e3, "shrunk_ms": s * 1e3, "saved": 1 - s / d,
                         "dense_cpu_ms": dc * 1e3, "shrunk_cpu_ms": sc * 1e3, "saved_cpu": 1 - sc / dc, "share": sh,
                         "saved_over_share": (1 - s / d) / sh, "saved_cpu_over_share": (1 - sc / dc) / sh})
    return rows


def shrink_table(rows: list[dict], batch: int) -> str:
    lines = ["| model | MLP neurons removed | threads | measure | dense ms | shrunk ms | wall time saved | "
             "CPU time saved | parameter share removed | saved / share: wall, CPU |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        measure = r["measure"].replace("prefill ", f"prefill {batch}x") if r["measure"] != "decode" else "decode 1x1"
        ratios = []
        for key in ("saved_over_share", "saved_cpu_over_share"):
            met = "" if r["measure"] == "decode" else (" ok" if r[key] >= TARGET else " below")
            ratios.append(f"{r[key]:.2f}{met}")
        lines.append(f"| {r['model']} | {r['removed']} | {r['threads']} | {measure} | {r['dense_ms']:,.1f} | "
                     f"{r['shrunk_ms']:,.1f} | {r['saved']:.1%} | {r['saved_cpu']:.1%} | {r['share']:.1%} | "
                     f"{', '.join(ratios)} |")
    return "\n".join(lines)


def machine() -> dict:
    """The CPU (lscpu's model name and AVX flags), torch's kernel level, versions and the git revision."""
    import transformers

    def cmd(*argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).resolve().parent).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    fields = dict(re.findall(r"^([^:\n]+):[ \t]*(.*)$", cmd("lscpu"), re.M))
    flags = set(fields.get("Flags", "").split())
    rev = cmd("git", "rev-parse", "--short", "HEAD").strip() or "unknown"
    dirty = cmd("git", "status", "--porcelain", "--untracked-files=no").strip()
    return {"cpu": fields.get("Model name") or platform.processor() or "unknown", "cpus": os.cpu_count(),
            "avx2": "avx2" in flags, "avx512f": "avx512f" in flags,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version(),
            "revision": rev + ("-dirty" if dirty else "")}


def cpu_slug(m: dict) -> str:
    """A file-name tag for a machine: its kernel level and CPU model, e.g. avx2_amd_epyc."""
    name = re.sub(r"[^a-z0-9]+", "_", m["cpu"].lower()).strip("_")
    return f"{m['cpu_capability'].lower()}_{name}"


def shrink_models(names: list[str], tiny: bool):
    from pdp_gpt2.data.models import resolve_model_path

    for name in names:
        if name == "gpt2":
            torch.manual_seed(0)
            cfg = GPT2Config(**TINY) if tiny else GPT2Config()
            yield ("tiny GPT-2" if tiny else "GPT-2 small shape"), GPT2LMHeadModel(cfg).eval()
        elif name == "embedded":
            yield "embedded", AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded")).eval()
        else:
            raise SystemExit(f"--models: unknown {name!r} (use gpt2, embedded)")


def run_shrink(args, length: int) -> dict:
    fractions = [float(f) for f in args.fractions.split(",")]
    threads = [int(t) for t in (args.threads or f"1,{os.cpu_count()}").split(",")]
    rows, shares, gaps = [], {}, {}
    for name, model in shrink_models(args.models.split(","), args.tiny):
        models, shares[name], gaps[name] = shrink_variants(model, fractions)
        for t in threads:
            torch.set_num_threads(t)
            med = timings(models, [length], args.reps, args.past, args.decode_steps, model.config.vocab_size,
                          batch=args.batch, keep=0, seconds=args.seconds)
            new = shrink_rows(med, shares[name], name, t, f"prefill {length}")
            rows += new
            print(shrink_table(new, args.batch), flush=True)
        del models, model
    return {"rows": rows, "share_removed": shares, "max_rel_logit_gap": gaps, "fractions": fractions,
            "batch": args.batch, "prefill_length": length, "target": TARGET}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sparsities", default="0.9,0.95", help="comma-separated (default: %(default)s)")
    p.add_argument("--threads", default=None,
                   help="CPU thread counts, comma-separated (default: 1,2; --shrink: 1 and all CPUs)")
    p.add_argument("--lengths", default=None, help="prefill lengths (default: 16,128,512; --tiny: 8,32; --shrink: 128, --tiny 32)")
    p.add_argument("--past", type=int, default=None, help="KV-cache length for decode (default: 128; --tiny: 16)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (default: %(default)s)")
    p.add_argument("--decode_steps", type=int, default=8, help="decode steps timed per repetition (default: %(default)s)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer 64-wide GPT-2: checks the script, measures nothing")
    p.add_argument("--json", type=Path, default=None, help="write every number to this JSON file")
    p.add_argument("--skip-sizes", action="store_true", help="only the speed tables")
    p.add_argument("--skip-speed", action="store_true", help="only the size table")
    p.add_argument("--shrink", action="store_true", help="time the physical shrink against the dense model instead")
    p.add_argument("--fractions", default="0.25,0.5,0.75",
                   help="--shrink: shares of MLP neurons removed (default: %(default)s)")
    p.add_argument("--seconds", type=float, default=30.0,
                   help="--shrink: repeat past --reps until this many seconds per model and thread count "
                        "(default: %(default)s)")
    p.add_argument("--batch", type=int, default=8, help="--shrink: prefill batch size (default: %(default)s)")
    p.add_argument("--models", default="gpt2,embedded",
                   help="--shrink: gpt2 (GPT-2 small's shape, random init; --tiny: 2 layers) and/or embedded "
                        "(default: %(default)s)")
    args = p.parse_args(argv)
    default = ("32" if args.tiny else "128") if args.shrink else ("8,32" if args.tiny else "16,128,512")
    lengths = [int(x) for x in (args.lengths or default).split(",")]
    args.past = args.past or (16 if args.tiny else 128)
    if args.shrink:
        return main_shrink(args, lengths[0])
    args.threads = args.threads or "1,2"
    root = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
    out: dict = {"model": "tiny GPT-2" if args.tiny else "GPT-2 small (124M, random init)", "past": args.past,
                 "lengths": lengths, "reps": args.reps, "decode_steps": args.decode_steps,
                 "torch": torch.__version__, "cpus": os.cpu_count(), "load_before": os.getloadavg()[0]}
    try:
        if not args.skip_sizes:
            rows = size_rows(root, args.tiny)
            out["sizes"] = [dict(zip(("case", "target_dense_mb", "target_exported_mb", "target_ratio",
                                      "whole_dense_mb", "whole_exported_mb", "whole_ratio"), r)) for r in rows]
            print("| export | target dense MB | target exported MB | target ratio | "
                  "whole dense MB | whole exported MB | whole ratio |\n|---|---:|---:|---:|---:|---:|---:|")
            for r in rows:
                print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.4f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.4f} |")
            print(flush=True)
        if not args.skip_speed:
            out.update(run_speed(root, args, lengths))
            print(f"\nmax |logit diff| sparse vs dense: "
                  + ", ".join(f"{s:.0%}: {d:.1e}" for s, d in out["max_abs_logit_diff"].items()))
            print(f"\n**CPU, batch 1, fp32, decode on a {args.past}-token KV cache; medians of {args.reps} "
                  f"interleaved repetitions**\n")
            print(speed_table(out["rows"]))
            print("\n**Memory-traffic limit of batch-1 decode (weight bytes read per token)**\n")
            print(traffic_table(out["traffic"], out["rows"]))
        out["load_after"] = os.getloadavg()[0]
        print(f"\nload average before/after: {out['load_before']:.1f} / {out['load_after']:.1f} on {out['cpus']} CPUs "
              "(multi-thread rows mean little when it exceeds CPUs - threads: see docs/performance.md)")
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out


def main_shrink(args, length: int) -> dict:
    out = {"benchmark": "shrink", "machine": machine(), "reps": args.reps, "seconds": args.seconds,
           "decode_steps": args.decode_steps,
           "past": args.past, "load_before": os.getloadavg()}
    out["shrink"] = run_shrink(args, length)
    out["load_after"] = os.getloadavg()
    print(f"\n**CPU, fp32, prefill {args.batch}x{length} tokens (every position's logits), decode batch 1 on a "
          f"{args.past}-token KV cache; medians of at least {args.reps} interleaved repetitions (and "
          f"{args.seconds:.0f} s)**\n")
    print(shrink_table(out["shrink"]["rows"], args.batch))
    m = out["machine"]
    print(f"\nshare removed: of the parameters a token touches (matmul weights and biases, LM head included; "
          f"embedding lookups and layer norms excluded). Target on prefill: saved >= {TARGET} x share.")
    print("max relative logit gap shrunk vs zeroed: " + ", ".join(
        f"{n} {f}: {g:.1e}" for n, gs in out["shrink"]["max_rel_logit_gap"].items() for f, g in gs.items()))
    print(f"machine: {m['cpu']} ({m['cpus']} CPUs, AVX2 {m['avx2']}, AVX-512 {m['avx512f']}, torch kernels "
          f"{m['cpu_capability']}), torch {m['torch']}, transformers {m['transformers']}, revision {m['revision']}; "
          f"load average before {out['load_before'][0]:.1f}, after {out['load_after'][0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
