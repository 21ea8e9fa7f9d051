"""`pdp-gpt2 eval`: sliding-window perplexity of any Hugging Face causal LM."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from pdp_gpt2.data.sources import DEFAULT_DATASET, DEFAULT_MODEL, SPLITS
from pdp_gpt2.errors import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="'embedded' (the bundled Shakespeare GPT-2), a local HF model directory, "
                             "or a hub id such as gpt2 (default: %(default)s)")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="'shakespeare' (embedded), local .txt files/globs (comma-separated), "
                             "or a HF dataset NAME[:CONFIG] (default: %(default)s)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which split to score (default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=0,
                        help="window length in tokens (default: 0 = the model's n_positions)")
    parser.add_argument("--stride", type=int, default=0,
                        help="tokens between window starts; smaller = more context per scored token, slower "
                             "(default: 0 = half the window)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--json", type=Path, default=None, help="also write the result to this JSON file")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def window_and_stride(max_length: int, stride: int, n_positions: int | None) -> tuple[int, int]:
    """Resolve the 0 defaults and check the values against the model's context."""
    if max_length < 0 or stride < 0:
        raise UsageError(f"--max_length and --stride must be positive, got {max_length} and {stride}")
    window = max_length or n_positions
    if not window:
        raise UsageError("the model config has no context length; pass --max_length")
    if n_positions and window > n_positions:
        raise UsageError(f"--max_length {window} exceeds the model's context of {n_positions} tokens")
    if window < 2:
        raise UsageError(f"--max_length must be at least 2, got {window}")
    stride = stride or max(1, window // 2)
    if stride > window:
        raise UsageError(f"--stride {stride} exceeds the window of {window} tokens")
    return window, stride


def pick_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available")
    return device


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.data.sources import load_split_texts, token_stream
    from pdp_gpt2.data.perplexity import perplexity
    from pdp_gpt2.data.models import load_model_and_tokenizer

    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {args.batch_size}")
    device = pick_device(args.device)
    model, tokenizer = load_model_and_tokenizer(args.model)
    n_positions = getattr(model.config, "n_positions", None) or getattr(model.config, "max_position_embeddings", None)
    window, stride = window_and_stride(args.max_length, args.stride, n_positions)
    ids = token_stream(tokenizer, load_split_texts(args.dataset, args.split))
    if len(ids) < 2:
        raise UsageError(f"the {args.split} split of {args.dataset!r} has fewer than 2 tokens")
    result = perplexity(model.to(device), ids, window=window, stride=stride, batch_size=args.batch_size,
                        progress=not args.no_progress, desc=f"eval {args.split}")
    result.update(model=args.model, dataset=args.dataset, split=args.split, window=window, stride=stride)
    print(f"{args.model} on {args.dataset}/{args.split}: perplexity {result['perplexity']:.3f} "
          f"(NLL {result['nll']:.4f} nats/token over {result['tokens']:,} tokens, window {window}, stride {stride})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
