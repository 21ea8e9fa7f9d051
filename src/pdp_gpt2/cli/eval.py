"""`pdp-gpt2 eval`: sliding-window perplexity of any causal LM, or lm-eval task scores with --tasks.

MODEL may be 'embedded', a HF directory, a run directory (final/), a compressed/2:4
export directory (detected by its model.pdp.safetensors), or a hub id.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from pdp_gpt2.data.sources import DEFAULT_DATASET, DEFAULT_MODEL, SPLITS
from pdp_gpt2.errors import UsageError

# Every result this command writes carries it: --json replaces only a file that has it (or an
# earlier result's shape, see is_eval_result), never a run's record or a model's config.
WRITTEN_BY = "pdp-gpt2 eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="'embedded' (the bundled Shakespeare GPT-2), a local HF model directory, a training "
                             "run directory (its final/), a `pdp-gpt2 export` directory, or a hub id such as gpt2 "
                             "(default: %(default)s)")
    parser.add_argument("--runtime", default="dense", choices=("dense", "sparse"),
                        help="sparse: pruned layers on CSR kernels (CPU only; same results within fp32 rounding) "
                             "(default: %(default)s)")
    parser.add_argument("--tasks", default=None,
                        help="lm-evaluation-harness tasks instead of perplexity: comma-separated names "
                             "(lambada_openai,hellaswag,arc_easy,piqa,wikitext) and/or paths to task YAML files "
                             "or folders; needs pip install -e \".[eval]\"; writes --json (default lm_eval.json)")
    parser.add_argument("--num_fewshot", type=int, default=None, help="with --tasks: few-shot examples per task")
    parser.add_argument("--limit", type=float, default=None,
                        help="with --tasks: documents per task (>= 1) or a fraction of them (< 1); for quick checks")
    parser.add_argument("--dataset", default=DEFAULT_DATASET,
                        help="'shakespeare' (embedded), local .txt files/globs (comma-separated), "
                             "or a HF dataset NAME[:CONFIG] (default: %(default)s)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="which split to score (default: %(default)s)")
    parser.add_argument("--max_length", type=int, default=0,
                        help="window length in tokens; the split must hold at least one window, a shorter one "
                             "is refused (default: 0 = the model's n_positions)")
    parser.add_argument("--stride", type=int, default=0,
                        help="tokens between window starts; smaller = more context per scored token, slower "
                             "(default: 0 = half the window)")
    parser.add_argument("--batch_size", type=int, default=8, help="windows per forward pass (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="'auto' (CUDA if available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--json", type=Path, default=None,
                        help="also write the result to this JSON file (with --tasks: default lm_eval.json); an "
                             "existing file is replaced only if it is an earlier result of eval")
    parser.add_argument("--no_progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.atomic import atomic_write_json
    from pdp_gpt2.data.perplexity import evaluate_split, pick_device
    from pdp_gpt2.export.loader import load_for_inference

    if args.batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {args.batch_size}")
    check_writable(args.json or (Path("lm_eval.json") if args.tasks is not None else None))
    device = pick_device(args.device)
    if args.runtime == "sparse" and device.type != "cpu":
        raise UsageError("--runtime sparse runs on the CPU; pass --device cpu")
    if args.tasks is not None:
        from pdp_gpt2.data.lmeval import require_lm_eval

        require_lm_eval()  # before loading the model: the missing extra is the first thing to say
    model, tokenizer, _ = load_for_inference(args.model, args.runtime)
    model.to(device)
    if args.tasks is not None:
        return _run_tasks(args, model, tokenizer)
    result = evaluate_split(model, tokenizer, args.dataset, args.split, max_length=args.max_length,
                            stride=args.stride, batch_size=args.batch_size, progress=not args.no_progress)
    result.update(model=args.model, runtime=args.runtime, written_by=WRITTEN_BY)
    print(f"{args.model} on {args.dataset}/{args.split}: perplexity {result['perplexity']:.3f} "
          f"(NLL {result['nll']:.4f} nats/token over {result['tokens']:,} tokens, "
          f"window {result['window']}, stride {result['stride']})")
    if args.json:
        atomic_write_json(args.json, result)
    return 0


def _run_tasks(args: argparse.Namespace, model, tokenizer) -> int:
    from pdp_gpt2.atomic import atomic_write_json
    from pdp_gpt2.data.lmeval import evaluate_tasks, markdown_table

    if args.limit is not None and args.limit <= 0:
        raise UsageError(f"--limit must be positive, got {args.limit}")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    result = evaluate_tasks(model, tokenizer, args.tasks, batch_size=args.batch_size, num_fewshot=args.num_fewshot,
                            limit=limit, max_length=args.max_length or None)
    result.update(model=args.model, runtime=args.runtime, written_by=WRITTEN_BY)
    out = args.json or Path("lm_eval.json")
    atomic_write_json(out, result)
    print(markdown_table(result))
    print(f"lm-eval results: {out}")
    return 0


def check_writable(path: Path | None) -> None:
    """UsageError now, before the evaluation, if ``--json`` cannot be written later: a directory
    there, a file where a parent directory should be, or a parent we may not write into
    (missing parents are fine: the result's writer creates them)."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--json {path} is a directory; give a file name (e.g. {path / 'eval.json'})")
    if path.exists() and not is_eval_result(path):
        raise UsageError(f"--json {path} exists and is not an eval result (no \"written_by\": \"{WRITTEN_BY}\"); "
                         "give a new file name, or move that file away")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"--json {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"--json {path}: {parent} is not writable")


def is_eval_result(path: Path) -> bool:
    """Whether ``path`` holds a result of this command: a JSON object with its ``written_by``, or with
    the keys every earlier result had (model and runtime, and perplexity or lm-eval's results)."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(r, dict):
        return False
    return r.get("written_by") == WRITTEN_BY or ({"model", "runtime"} <= r.keys()
                                                and bool({"perplexity", "results"} & r.keys()))
