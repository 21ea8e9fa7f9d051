"""A run's evaluations: perplexity on the evaluation tokens (timed, each masked weight computed
once) and, with --eval_tasks, lm-evaluation-harness on the pruned model."""
from __future__ import annotations

import time
from pathlib import Path

from torch.nn.utils import parametrize

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.data.lmeval import evaluate_tasks, markdown_table, scores
from pdp_gpt2.data.perplexity import perplexity
from pdp_gpt2.train.config import TrainConfig


def evaluate(model, tokens, cfg: TrainConfig, desc: str, seconds: dict | None = None) -> float:
    """Perplexity on ``tokens``; its wall time goes into ``seconds`` under desc's last word (dense, soft, pruned)."""
    t0 = time.perf_counter()
    # cached(): each masked weight is computed once for the whole evaluation, not per batch.
    with parametrize.cached():
        ppl = perplexity(model, tokens, window=cfg.max_length, stride=cfg.stride,
                         batch_size=cfg.eval_batch_size, progress=cfg.progress, desc=desc)["perplexity"]
    if seconds is not None:
        seconds[desc.split()[-1]] = round(time.perf_counter() - t0, 2)
    return ppl


def task_scores(model, tokenizer, cfg: TrainConfig, out: Path) -> dict:
    """lm-evaluation-harness on the pruned model: the full result in lm_eval.json, {task/metric: value} returned."""
    r = evaluate_tasks(model, tokenizer, cfg.eval_tasks, batch_size=cfg.eval_batch_size)
    atomic_write_json(out / "lm_eval.json", r)
    print(markdown_table(r))
    return scores(r)
