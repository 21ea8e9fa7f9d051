"""Sliding-window perplexity (transformers guide "Perplexity of fixed-length models").

Windows of ``window`` tokens start every ``stride`` tokens.  A window's labels
cover only the tokens that no earlier window scored; the rest are context.
With ``stride < window`` every token except the very first is scored exactly
once.  With ``stride == window`` the windows do not overlap and the first
token of each window has no context, so it is not scored (this is the usual
non-overlapping evaluation: ``len(tokens) - n_windows`` tokens are scored).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from pdp_gpt2.data.sources import load_split_texts, token_stream
from pdp_gpt2.errors import UsageError

IGNORE = -100


@dataclass(frozen=True)
class Window:
    begin: int  # first input token
    end: int  # one past the last input token
    score_from: int  # first position (inside the window) whose token is scored


def plan_windows(n_tokens: int, window: int, stride: int) -> list[Window]:
    """The guide's windows: pure bookkeeping, no model."""
    if window < 2:
        raise ValueError(f"window must be at least 2, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    if n_tokens < 2:
        raise ValueError(f"need at least 2 tokens to score, got {n_tokens}")
    out, prev_end = [], 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + window, n_tokens)
        # Position 0 has no context in its window, so it can never be a target.
        out.append(Window(begin, end, max(1, prev_end - begin)))
        prev_end = end
        if end == n_tokens:
            break
    return out


def scored_tokens(windows: list[Window]) -> int:
    return sum(w.end - w.begin - w.score_from for w in windows)


def _batches(windows: list[Window], batch_size: int) -> list[list[Window]]:
    """Consecutive windows of equal length (only the last window may be shorter)."""
    out: list[list[Window]] = []
    for w in windows:
        if out and len(out[-1]) < batch_size and out[-1][0].end - out[-1][0].begin == w.end - w.begin:
            out[-1].append(w)
        else:
            out.append([w])
    return out


def _device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def perplexity(model, token_ids: torch.Tensor, window: int, stride: int, batch_size: int = 8,
               progress: bool = True, desc: str = "eval") -> dict:
    """Perplexity of a causal LM on a 1-D token stream.

    Returns ``{"perplexity": exp(nll), "nll": mean NLL per scored token in nats,
    "tokens": number of scored tokens}``.  The NLL is summed from the logits
    ourselves: the model's own loss is a per-batch mean, which would weight
    short windows wrongly.  The model's train/eval mode is restored afterwards.
    """
    if token_ids.dim() != 1:
        raise ValueError(f"token_ids must be 1-D, got shape {tuple(token_ids.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    windows = plan_windows(len(token_ids), window, stride)
    device = _device(model)
    was_training = model.training
    model.eval()
    total_nll, total_tokens = 0.0, 0
    try:
        # no_grad rather than inference_mode: parametrized (masked) weights are
        # recomputed in forward and inference tensors would break later training.
        with torch.no_grad():
            for batch in tqdm(_batches(windows, batch_size), desc=desc, disable=not progress, leave=False):
                ids = torch.stack([token_ids[w.begin:w.end] for w in batch]).to(device)
                labels = ids.clone()
                for row, w in enumerate(batch):
                    labels[row, : w.score_from] = IGNORE
                logits = model(input_ids=ids).logits[:, :-1].float()
                targets = labels[:, 1:]
                total_nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=IGNORE, reduction="sum").item()
                total_tokens += int((targets != IGNORE).sum())
    finally:
        model.train(was_training)
    assert total_tokens == scored_tokens(windows)
    nll = total_nll / total_tokens
    return {"perplexity": math.exp(nll), "nll": nll, "tokens": total_tokens}


# ---- one split of a dataset, scored: what `pdp-gpt2 eval` and a run's evaluations share ----------
def context_length(config) -> int | None:
    """The model's context in tokens (GPT-2: n_positions; Llama/OPT: max_position_embeddings), None if unknown."""
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)


def window_and_stride(max_length: int, stride: int, n_positions: int | None) -> tuple[int, int]:
    """Resolve the 0 defaults (the model's context; half the window) and check them against the context."""
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


def pick_device(name: str = "auto") -> torch.device:
    """'auto' is CUDA when available, else the CPU; a named device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown --device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name} requested but CUDA is not available")
    return device


def evaluate_split(model, tokenizer, dataset: str, split: str, *, max_length: int = 0, stride: int = 0,
                   batch_size: int = 8, progress: bool = True) -> dict:
    """Sliding-window perplexity of a loaded model on one split of a dataset spec.

    ``max_length``/``stride`` 0 mean the model's context and half the window.  Returns
    :func:`perplexity`'s dict plus ``dataset, split, window, stride``.  The model runs
    where it is (move it with :func:`pick_device` first).
    """
    if batch_size < 1:
        raise UsageError(f"--batch_size must be positive, got {batch_size}")
    window, stride = window_and_stride(max_length, stride, context_length(model.config))
    ids = token_stream(tokenizer, load_split_texts(dataset, split))
    if len(ids) < 2:
        raise UsageError(f"the {split} split of {dataset!r} has fewer than 2 tokens")
    if len(ids) < window:
        # Not one full window: a number over a handful of tokens is noise (an empty tokenizer once
        # gave "perplexity 2990070 over 1 tokens", exit 0).  A shorter --max_length is explicit.
        raise UsageError(f"the {split} split of {dataset!r} has {len(ids)} tokens, fewer than one window of {window}: "
                         f"too few for a perplexity; pass a larger split or --max_length {len(ids)} or less")
    result = perplexity(model, ids, window=window, stride=stride, batch_size=batch_size, progress=progress,
                        desc=f"eval {split}")
    return {**result, "dataset": dataset, "split": split, "window": window, "stride": stride}
