"""`pdp-gpt2 generate`: text from any model (dense, run, compressed export), with prefill and decode speed."""
from __future__ import annotations

import argparse

from pdp_gpt2.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="'embedded', a HF model directory, a training run directory (uses final/), "
                             "a compressed/2:4 export directory, or a hub id")
    parser.add_argument("--prompt", default="To be, or not to be", help="text to continue (default: %(default)r)")
    parser.add_argument("--runtime", default="dense", choices=("dense", "sparse"),
                        help="sparse: pruned layers on CSR kernels (CPU; faster at high sparsity, "
                             "same logits within fp32 rounding) (default: %(default)s)")
    parser.add_argument("--max_new_tokens", type=int, default=50, help="tokens to generate (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0 = greedy (deterministic); > 0 samples (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: %(default)s)")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="CPU threads for torch (default: 0 = torch's own choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from pdp_gpt2.export.loader import load_for_inference, timed_generate

    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be positive, got {args.max_new_tokens}")
    if args.num_threads < 0 or args.temperature < 0:
        raise UsageError("--num_threads and --temperature must not be negative")
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model, tokenizer, _ = load_for_inference(args.model, args.runtime)
    r = timed_generate(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.seed)
    print(r["text"])
    print(f"[{args.runtime} runtime, {torch.get_num_threads()} thread(s)] prefill {r['prompt_tokens']} tokens: "
          f"{r['prefill_tps']:,.1f} tokens/s; decode {r['new_tokens']} tokens: {r['decode_tps']:,.1f} tokens/s")
    return 0
