"""Resolve a model spec to a Hugging Face causal LM and its tokenizer.

A spec is ``"embedded"`` (the bundled small GPT-2), a local model directory,
or a hub id (``gpt2``, ``distilgpt2``, ``org/name``).  Local directories are
tried first; hub ids go through :mod:`pdp_gpt2.data.hub` so an offline machine
fails in seconds with a UsageError instead of retrying for half a minute.
Remote code is never trusted.
"""
from __future__ import annotations

import json
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


def safetensors_damage(f: Path) -> str | None:
    """Why a .safetensors file cannot load (empty, truncated, unreadable header), or None.

    Reads only the 8-byte length and the JSON header: the file must be exactly as long as
    the header says.  transformers would otherwise fail mid-load with its own error types.
    """
    try:
        size = f.stat().st_size
        with open(f, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            if size < 8 or 8 + n > size:
                return f"{f.name} is empty or truncated ({size} bytes)"
            header = json.loads(fh.read(n).decode("utf-8"))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except OSError as e:
        return f"{f.name} cannot be read ({e.strerror})"
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return f"{f.name} has no readable safetensors header"
    if 8 + n + end != size:
        return f"{f.name} is truncated ({size} bytes, its header describes {8 + n + end})"
    return None


def check_safetensors(model_dir: Path) -> None:
    """UsageError naming the first damaged *.safetensors file of a local model directory."""
    for f in sorted(Path(model_dir).glob("*.safetensors")):
        if (why := safetensors_damage(f)) is not None:
            raise UsageError(f"cannot load model from {model_dir}: {why}")


def load_model_and_tokenizer(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` for a spec; the model is in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    where = resolve_model_path(spec)
    # Prefer safetensors whenever the directory has them (no pickle loading);
    # for hub ids transformers already prefers them when the repo offers both.
    safetensors = True if isinstance(where, Path) and any(where.glob("*.safetensors")) else None
    if safetensors:
        check_safetensors(where)
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
