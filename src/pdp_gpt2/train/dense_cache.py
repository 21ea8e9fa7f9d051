"""The dense model's perplexity, computed once per run and kept in dense_eval.json under the key
of what it was computed on, so a resume reads it back instead of evaluating again."""
from __future__ import annotations

import json
import math
import sys

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.train import rundir
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.train.evaluation import evaluate
from pdp_gpt2.train.prepare import Prepared


def dense_perplexity(model, prep: Prepared, cfg: TrainConfig, is_main: bool, seconds: dict | None = None) -> float:
    """The dense model's perplexity, computed once per run and read back on resume (dense_eval.json)."""
    path = prep.output_dir / rundir.DENSE_EVAL
    key = {"model": cfg.model, "dataset": cfg.dataset, "eval_split": cfg.eval_split, "window": cfg.max_length,
           "stride": cfg.stride, "eval_tokens": int(len(prep.eval_tokens))}
    if prep.resume_from is not None and path.is_file():
        try:
            cached = json.loads(path.read_text())
            if cached["key"] == key:
                return valid_perplexity(cached["perplexity"])
        except (OSError, ValueError, KeyError, TypeError) as e:  # a cut-off or edited file: not worth a traceback
            if is_main:
                print(f"pdp-gpt2: warning: {path} does not hold a dense perplexity ({type(e).__name__}: {e}); "
                      "computing it again", file=sys.stderr, flush=True)
    ppl = evaluate(model, prep.eval_tokens, cfg, "eval dense", seconds)
    if is_main:
        atomic_write_json(path, {"perplexity": ppl, "key": key})
    return ppl


def valid_perplexity(value) -> float:
    """``value`` if it can be a perplexity (a finite number >= 1: exp of a mean NLL >= 0), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value < math.inf:
        raise ValueError(f"perplexity {value!r} is not a finite number >= 1")
    return float(value)
