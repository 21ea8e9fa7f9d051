"""`pdp-gpt2 generate`: text from any model (dense, run, compressed export), with prefill and decode speed."""
from __future__ import annotations

import argparse
import math
import os

from pdp_gpt2.errors import UsageError


# Below this, sampling picks the greedy token anyway, and float32 logits / temperature overflow
# to inf (1e-300 made torch.multinomial raise): 0 says "greedy" without either problem.
MIN_TEMPERATURE = 1e-4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL",
                        help="'embedded', a HF model directory, a training run directory (uses final/), "
                             "a compressed/2:4 export directory, or a hub id")
    parser.add_argument("--prompt", default="To be, or not to be", help="text to continue (default: %(default)r)")
    parser.add_argument("--runtime", default="dense", choices=("dense", "sparse"),
                        help="sparse: pruned layers on CSR kernels (CPU; faster at high sparsity, "
                             "same logits within fp32 rounding) (default: %(default)s)")
    parser.add_argument("--max_new_tokens", type=int, default=50,
                        help="tokens to generate; the prompt plus these must fit the model's context "
                             "(GPT-2: n_positions), a longer request is refused, naming the most that fits "
                             "(default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.0,
                        help=f"0 = greedy (deterministic, --seed unused); otherwise sampling at this temperature, "
                             f"finite and >= {MIN_TEMPERATURE:g} (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed, 0..2**64-1 (default: %(default)s)")
    parser.add_argument("--num_threads", type=int, default=0,
                        help="CPU threads for torch, at most this machine's CPU count "
                             "(default: 0 = torch's own choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from pdp_gpt2.export.loader import load_for_inference, timed_generate

    check_flags(args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    model, tokenizer, _ = load_for_inference(args.model, args.runtime)
    r = timed_generate(model, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.seed)
    print(r["text"])
    print(f"[{args.runtime} runtime, {torch.get_num_threads()} thread(s)] prefill {r['prompt_tokens']} tokens: "
          f"{r['prefill_tps']:,.1f} tokens/s; decode {r['new_tokens']} tokens: {r['decode_tps']:,.1f} tokens/s")
    return 0


def check_flags(args: argparse.Namespace) -> None:
    """One UsageError per bad flag, before the model is loaded."""
    if args.max_new_tokens < 1:
        raise UsageError(f"--max_new_tokens must be positive, got {args.max_new_tokens}")
    t = args.temperature
    if not (t == 0 or MIN_TEMPERATURE <= t < math.inf):  # nan fails every comparison: refused too
        raise UsageError(f"--temperature must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE:g}, got {t}")
    if not 0 <= args.seed < 2 ** 64:
        raise UsageError(f"--seed must be in 0..2**64-1 (torch's range), got {args.seed}")
    cpus = os.cpu_count() or 1
    if not 0 <= args.num_threads <= cpus:
        raise UsageError(f"--num_threads must be in 0..{cpus} (this machine's CPUs; 0 = torch's choice), "
                         f"got {args.num_threads}")
