"""Resolve a model spec to a Hugging Face causal LM and its tokenizer.

A spec is ``"embedded"`` (the bundled small GPT-2), a local model directory,
or a hub id (``gpt2``, ``distilgpt2``, ``org/name``).  Local directories are
tried first; hub ids go through :mod:`pdp_gpt2.data.hub` so an offline machine
fails in seconds with a UsageError instead of retrying for half a minute.
Remote code is never trusted.
"""
from __future__ import annotations

from pathlib import Path

import torch

from pdp_gpt2.data.sources import DEFAULT_MODEL, EMBEDDED_MODEL_DIR
from pdp_gpt2.errors import UsageError
from pdp_gpt2.data.hub import offline_unless_reachable


def resolve_model_path(spec: str) -> Path | str:
    """Local directory for ``embedded``/paths, or the hub id unchanged."""
    spec = spec.strip()
    if spec == DEFAULT_MODEL:
        if not (EMBEDDED_MODEL_DIR / "config.json").is_file():
            raise UsageError(f"the embedded model is missing at {EMBEDDED_MODEL_DIR}; run `pdp-gpt2 pretrain`")
        return EMBEDDED_MODEL_DIR
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UsageError(f"{spec} is not a model directory (no config.json)")
        return path
    # Hub ids are "name" or "org/name"; anything else that does not exist is a mistyped path.
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or spec.endswith("/") or "\\" in spec:
        raise UsageError(f"model directory not found: {spec}")
    return spec


def load_model_and_tokenizer(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` for a spec; the model is in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_path(spec)
    # Prefer safetensors whenever the directory has them (no pickle loading);
    # for hub ids transformers already prefers them when the repo offers both.
    safetensors = True if isinstance(where, Path) and any(where.glob("*.safetensors")) else None
    try:
        with offline_unless_reachable():
            tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, use_safetensors=safetensors,
                                                         trust_remote_code=False)
    except (OSError, ValueError) as e:
        if isinstance(where, Path):
            raise UsageError(f"cannot load model from {where}: {str(e).splitlines()[0]}") from None
        from pdp_gpt2.data.hub import hub_reachable

        if not hub_reachable():
            raise UsageError(f"cannot reach the Hugging Face hub for model {spec!r} and it is not cached; "
                             "pass a local model directory instead (or 'embedded')") from None
        raise UsageError(f"cannot load model {spec!r} from the Hugging Face hub: {str(e).splitlines()[0]}") from None
    model.eval()
    return model, tokenizer
