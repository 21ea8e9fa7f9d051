"""One loader for every model a user can point a command at, in the dense or the sparse runtime.

``load_for_inference(spec, runtime)`` takes 'embedded', a hub id, a HF model
directory, a training run directory (its ``final/``) or a compressed / 2:4
export directory (detected by its ``model.pdp.safetensors``), and returns
``(model, tokenizer, kind)``.  With ``runtime="sparse"`` the pruned layers run on
CSR kernels (:mod:`pdp_gpt2.export.sparse`): for an export, the tensors its
header lists as pruned; for a plain finalized directory, every Linear/Conv1D
whose exact zeros make the sparse kernel pay (the rule in sparse.py decides,
so no separate list of pruned tensors is needed).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.export.compressed import WEIGHTS_FILE
from pdp_gpt2.export.compressed_loader import RUNTIMES, load_compressed


def model_kind(spec: str) -> tuple[str, Path | str]:
    """('export' | 'run' | 'model', path or spec): what a model argument points at."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if (path / WEIGHTS_FILE).is_file():
            return "export", path
        if (path / "final" / "config.json").is_file() and not (path / "config.json").is_file():
            return "run", path / "final"
    return "model", spec


def load_for_inference(spec: str, runtime: str = "dense", dtype: torch.dtype = torch.float32):
    """(model in eval mode on the CPU, tokenizer, kind) for any model argument; see the module docstring."""
    from pdp_gpt2.data.models import load_model_and_tokenizer, load_tokenizer
    from pdp_gpt2.export.sparse import sparsify

    if runtime not in RUNTIMES:
        raise UsageError(f"unknown --runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")
    kind, where = model_kind(spec)
    if kind == "export":
        model = load_compressed(where, runtime=runtime)
        try:  # an export of a directory without one: transformers builds an empty one (load_tokenizer refuses it)
            tokenizer = load_tokenizer(Path(where))
        except UsageError:
            raise
        except (OSError, ValueError) as e:
            raise UsageError(f"{where}: no usable tokenizer next to the export ({str(e).splitlines()[0]})") from None
        return model, tokenizer, kind
    model, tokenizer = load_model_and_tokenizer(str(where), dtype=dtype)
    if runtime == "sparse":
        sparsify(model)
    return model, tokenizer, kind


class _Clock:
    """A generate() streamer that only notes when each batch of tokens arrives."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value):  # first call: the prompt (before prefill); then one call per new token
        self.times.append(time.perf_counter())

    def end(self):
        pass


def check_context(prompt_tokens: int, max_new_tokens: int, context: int | None) -> None:
    """Refuse a request that does not fit the model's context (positions past it do not exist:
    GPT-2 raised an IndexError mid-generation).  Refused rather than capped: the user gets the
    tokens asked for or is told the most that fits, never silently fewer."""
    if context is None:  # no fixed context in the config (e.g. some rotary models): nothing to check
        return
    if prompt_tokens >= context:
        raise UsageError(f"--prompt is {prompt_tokens} tokens, which fills the model's context of {context} tokens "
                         "and leaves no room to generate")
    if prompt_tokens + max_new_tokens > context:
        raise UsageError(f"--max_new_tokens {max_new_tokens} plus the prompt's {prompt_tokens} tokens exceed the "
                         f"model's context of {context} tokens: at most {context - prompt_tokens} new tokens fit")


@torch.no_grad()
def timed_generate(model, tokenizer, prompt: str, max_new_tokens: int = 50, temperature: float = 0.0,
                   seed: int = 0) -> dict:
    """Generate from ``prompt``; {'text', 'new_tokens', 'prompt_tokens', 'prefill_tps', 'decode_tps'}.

    Prefill = prompt in, first new token out; decode = every later token.
    Greedy unless temperature > 0.  Prompt plus new tokens must fit the model's context.
    """
    from pdp_gpt2.data.perplexity import context_length

    ids = tokenizer(prompt, return_tensors="pt").input_ids
    if ids.shape[1] == 0:
        raise UsageError("--prompt is empty after tokenization")
    check_context(int(ids.shape[1]), max_new_tokens, context_length(model.config))
    torch.manual_seed(seed)
    clock = _Clock()
    sample = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, min_new_tokens=1,
                         streamer=clock, pad_token_id=pad, **sample)
    new = out[0, ids.shape[1]:]
    t = clock.times  # t[0] prompt handed over, t[1] first new token, t[-1] last one
    prefill = t[1] - t[0] if len(t) > 1 else float("nan")
    decode = (len(t) - 2) / (t[-1] - t[1]) if len(t) > 2 and t[-1] > t[1] else float("nan")
    return {"text": tokenizer.decode(out[0], skip_special_tokens=True), "prompt_tokens": int(ids.shape[1]),
            "new_tokens": int(new.numel()), "prefill_tps": ids.shape[1] / prefill if prefill > 0 else float("nan"),
            "decode_tps": decode}
