"""Sizes and inference speed of exported PDP models on a GPT-2-small-shaped model (124M, random init).

    python benchmarks/inference.py                 # sizes + CPU speed (+ GPU speed if CUDA)
    python benchmarks/inference.py --skip-speed    # only the size table

No download: the model is GPT2Config() (GPT-2 small's shape) with random
weights, pruned to 90% with ``pdp_gpt2.attach(...).finalize()`` - sizes and
speeds depend on shapes and sparsity, not on what the weights learned.

Speed variants (interleaved after a warm-up, medians; the absolute seconds on a
shared machine mean little, the ratios to dense mean more):
  dense     from_pretrained of the finalized directory;
  exported  load_compressed of the compressed export: a plain dense model again;
  csr       exported model with the pruned layers as torch sparse CSR (CPU only, benchmark-only wrapper);
  2:4 dense / 2:4 semi-structured (CUDA only): fp16, a 2:4-pruned model, torch.sparse.to_sparse_semi_structured.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
from transformers.utils import logging as hf_logging

import pdp_gpt2
from pdp_gpt2.export.writer import export, pruned_tensors

warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


def pruned_gpt2_small(root: Path, name: str, **cfg) -> Path:
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config()).eval()
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(**cfg)).finalize()
    model.save_pretrained(root / name)
    return root / name


def size_rows(root: Path) -> list[tuple]:
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
            made[key] = pruned_gpt2_small(root, f"src{len(made)}", **cfg)
        out = root / "out"
        rep = export(made[key], out, fmt, values=values, overwrite=True)
        t, w = rep["target_weights"], rep["whole_model"]
        rows.append((label, t["dense_bytes"] / 1e6, t["exported_bytes"] / 1e6, t["ratio"],
                     w["dense_bytes"] / 1e6, w["exported_bytes"] / 1e6, w["ratio"]))
        shutil.rmtree(out)
    return rows


# ---- speed --------------------------------------------------------------------------------


class CSRLinear(nn.Module):
    """y = x W^T + b with W (out, in) held as a sparse CSR tensor."""

    def __init__(self, w_out_in: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.w, self.bias = w_out_in.detach().to_sparse_csr(), bias

    def forward(self, x):
        y = torch.sparse.mm(self.w, x.reshape(-1, x.shape[-1]).t().contiguous()).t()
        y = y if self.bias is None else y + self.bias
        return y.reshape(*x.shape[:-1], -1)


def to_csr(model: nn.Module) -> nn.Module:
    modules = dict(model.named_modules())
    for wname, out_dim in pruned_tensors(model).items():
        name = wname.removesuffix(".weight")
        mod = modules[name]
        w = mod.weight if out_dim == 0 else mod.weight.t()  # Conv1D stores (in, out)
        parent, _, child = name.rpartition(".")
        setattr(modules[parent], child, CSRLinear(w, mod.bias))
    return model


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def timings(models: dict, lengths: list[int], reps: int, past: int, device) -> dict:
    """{(variant, measure): median seconds}; variants interleaved within every repetition."""
    g = torch.Generator().manual_seed(0)
    ids = {n: torch.randint(0, 50257, (1, n), generator=g).to(device) for n in lengths + [past + 1]}
    caches, kw = {}, "past_key_values"
    for name, m in models.items():  # one KV cache of `past` tokens per model, cropped back after each step
        out = m(ids[past + 1][:, :past], use_cache=True)
        kw = "cache" if "cache" in out else "past_key_values"  # transformers 5.x renamed it
        caches[name] = out[kw]
    results: dict = {}

    def once(name, m, record):
        for n in lengths:
            sync(device); t = time.perf_counter()
            m(ids[n], use_cache=False, logits_to_keep=1)
            sync(device); record(name, f"prefill {n}", time.perf_counter() - t)
        sync(device); t = time.perf_counter()
        m(ids[past + 1][:, past:], use_cache=True, **{kw: caches[name]})
        sync(device); record(name, "decode", time.perf_counter() - t)
        caches[name].crop(past - caches[name].get_seq_length())  # negative: drop the token just added

    for _ in range(1):  # warm-up
        for name, m in models.items():
            once(name, m, lambda *a: None)
    for _ in range(reps):
        for name, m in models.items():
            once(name, m, lambda v, k, s: results.setdefault((v, k), []).append(s))
    return {k: statistics.median(v) for k, v in results.items()}


def speed_table(title: str, med: dict, variants: list[str], lengths: list[int]) -> str:
    base = variants[0]
    head = "| measure | " + " | ".join(variants) + " | " + " | ".join(f"{v} / {base}" for v in variants[1:]) + " |"
    lines = [f"**{title}**", "", head, "|---" * (2 * len(variants)) + "|"]
    for n in lengths:
        tps = [n / med[(v, f"prefill {n}")] for v in variants]
        ratios = [f"{t / tps[0]:.2f}x" for t in tps[1:]]
        lines.append(f"| prefill {n} tokens (tokens/s) | " + " | ".join(f"{t:,.0f}" for t in tps) + " | "
                     + " | ".join(ratios) + " |")
    ms = [1e3 * med[(v, "decode")] for v in variants]
    lines.append("| decode 1 token (ms) | " + " | ".join(f"{x:.1f}" for x in ms) + " | "
                 + " | ".join(f"{x / ms[0]:.2f}x" for x in ms[1:]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", default="16,128,512", help="prefill lengths, comma-separated (default: %(default)s)")
    p.add_argument("--past", type=int, default=128, help="KV-cache length for the decode step (default: %(default)s)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per variant (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads; 1 is the steadiest on a shared machine (default: %(default)s)")
    p.add_argument("--skip-sizes", action="store_true", help="only the speed tables")
    p.add_argument("--skip-speed", action="store_true", help="only the size table")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    lengths = [int(x) for x in args.lengths.split(",")]
    root = Path(tempfile.mkdtemp(prefix="pdp-bench-"))
    try:
        if not args.skip_sizes:
            print("| GPT-2 small (124M), export | target dense MB | target exported MB | target ratio | "
                  "whole dense MB | whole exported MB | whole ratio |\n|---|---:|---:|---:|---:|---:|---:|")
            for r in size_rows(root):
                print(f"| {r[0]} | {r[1]:.1f} | {r[2]:.1f} | {r[3]:.4f} | {r[4]:.1f} | {r[5]:.1f} | {r[6]:.4f} |",
                      flush=True)
            print()
        if args.skip_speed:
            return
        src = pruned_gpt2_small(root, "speed", sparsity=0.9)
        export(src, root / "exported")
        cpu = torch.device("cpu")
        models = {"dense": AutoModelForCausalLM.from_pretrained(src).eval(),
                  "exported": pdp_gpt2.load_compressed(root / "exported"),
                  "csr": to_csr(pdp_gpt2.load_compressed(root / "exported"))}
        ids = torch.randint(0, 50257, (1, 32), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            ref = models["dense"](ids).logits
            same = torch.equal(ref, models["exported"](ids).logits)
            diff = (models["csr"](ids).logits - ref).abs().max().item()
        print(f"exported logits identical to dense: {same}; csr max |logit diff|: {diff:.2e}")
        med = timings(models, lengths, args.reps, args.past, cpu)
        print(speed_table(f"CPU, {args.threads} thread(s), batch 1, 90% unstructured, fp32", med, list(models),
                          lengths))
        if torch.cuda.is_available():
            gpu_speed(root, lengths, args)
        else:
            print("\n(no CUDA device: GPU and 2:4 semi-structured rows not measured)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def gpu_speed(root: Path, lengths: list[int], args) -> None:
    src = pruned_gpt2_small(root, "speed24", sparsity=0.5, pattern="2:4")
    export(src, root / "exported24", "2:4")
    dev = torch.device("cuda")
    models = {"2:4 dense fp16": AutoModelForCausalLM.from_pretrained(src, dtype=torch.float16).to(dev).eval()}
    sparse = pdp_gpt2.load_compressed(root / "exported24").half()
    from pdp_gpt2.export.nm24 import to_semi_structured

    n = to_semi_structured(sparse.to(dev), [k.removesuffix(".weight") for k in pruned_tensors(sparse)])
    models[f"2:4 semi-structured ({n} layers)"] = sparse
    med = timings(models, lengths, args.reps, args.past, dev)
    print()
    print(speed_table(f"GPU {torch.cuda.get_device_name()}, batch 1, 2:4, fp16", med, list(models), lengths))


if __name__ == "__main__":
    main()
