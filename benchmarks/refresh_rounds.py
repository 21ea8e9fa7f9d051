"""How many rounds (host reads) the threshold selection takes per refresh in a real training run:
a short `pdp-gpt2 train` on the bundled model (its sparsity ramp, then recovery), in-process, with
the selection's round counter read at the end.

    python benchmarks/refresh_rounds.py                          # the way this device collects (CPU: compact)
    PDP_GPT2_COLLECT=fixed python benchmarks/refresh_rounds.py   # the GPU's way, here on CPU

A round that misses (the weights moved further than the bracket allowed, or the bracket held more
candidates than one collection keeps) costs another host read on a GPU; the target is at most 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max_steps", type=int, default=150)
    p.add_argument("--warmup_steps", type=int, default=75, help="sparsity ramp length")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(args.threads)
    from pdp_gpt2.cli import main as cli
    from pdp_gpt2.pdp.kernels import select

    with tempfile.TemporaryDirectory() as tmp:
        rc = cli(["train", "--max_steps", str(args.max_steps), "--warmup_steps", str(args.warmup_steps),
                  "--output_dir", str(Path(tmp) / "run"), "--progress", "false"])
    hist = dict(sorted(select.rounds.items()))
    res = {"collect": os.environ.get("PDP_GPT2_COLLECT", "auto"), "max_steps": args.max_steps,
           "warmup_steps": args.warmup_steps, "rounds_per_select_call": hist, "returncode": rc}
    print(f"rounds per selection call (collect={res['collect']}): {hist}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
