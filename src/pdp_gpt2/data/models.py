"""Resolve a model spec to a Hugging Face causal LM and its tokenizer.

A spec is ``"embedded"`` (the bundled small GPT-2), a local model directory,
or a hub id (``gpt2``, ``distilgpt2``, ``org/name``).  Local directories are
tried first; hub ids go through :mod:`pdp_gpt2.data.hub` so an offline machine
fails in seconds with a UsageError instead of retrying for half a minute.
Remote code is never trusted.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from pdp_gpt2.data.sources import DEFAULT_MODEL, EMBEDDED_MODEL_DIR
from pdp_gpt2.errors import UsageError
from pdp_gpt2.names import ORIGINAL, STATE_FILE
from pdp_gpt2.data.hub import offline_unless_reachable


@functools.lru_cache(maxsize=1)
def _dtype_key() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


def dtype_kwarg(dtype) -> dict:
    """``{"dtype": dtype}`` for ``from_pretrained``/``from_config``: transformers 4.56 renamed the keyword
    from ``torch_dtype`` (which still works after, with a deprecation warning; before, ``dtype`` reaches
    the model's ``__init__`` and fails), so the old name is passed to older versions."""
    return {_dtype_key(): dtype}


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


MASKED_KEY = "." + ORIGINAL.split(".")[0] + "."  # parametrize's state_dict keys: masks still attached
CHECKPOINT_STATE = STATE_FILE  # what completes a training checkpoint


def _safetensors_keys(f: Path) -> list[str]:
    """The tensor names in a .safetensors header (its JSON only, no tensor data)."""
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return [k for k in json.loads(fh.read(n).decode("utf-8")) if k != "__metadata__"]


def check_model_dir(model_dir: Path) -> None:
    """UsageError for a local directory that would load wrong or unsafely, before anything loads.

    A training checkpoint (``checkpoint-N/``) holds the weights with their PDP masks still
    attached (keys ``...parametrizations.weight.original``) and no tokenizer: transformers
    would load it with random weights where the masked ones are, and an empty tokenizer.
    Pickled weights (``pytorch_model.bin``) are refused because unpickling can run code.
    """
    check_safetensors(model_dir)
    files = sorted(model_dir.glob("*.safetensors"))
    masked = any(MASKED_KEY in k for f in files for k in _safetensors_keys(f))
    if masked or (model_dir / CHECKPOINT_STATE).is_file():
        run, final = model_dir.parent, model_dir.parent / "final"
        use = f"use the finished model in {final}" if (final / "config.json").is_file() else \
            f"finish the run (`pdp-gpt2 train --output_dir {run} --resume`) and use {final}"
        what = "PDP masks still attached" if masked else "saved for --resume"
        raise UsageError(f"{model_dir} is a training checkpoint ({what}), not a finished model: {use}")
    pickled = sorted(p.name for p in model_dir.glob("pytorch_model*.bin"))
    if not files and pickled:
        raise UsageError(f"{model_dir} has only pickled weights ({pickled[0]}); pdp-gpt2 loads safetensors only, "
                         "because unpickling a file can run code: convert it where you trust its source "
                         "(from_pretrained, then save_pretrained(dir, safe_serialization=True))")


def _no_tokenizer(where) -> UsageError:
    return UsageError(f"{where} has no tokenizer (no vocabulary besides special tokens): add the tokenizer files "
                      "of the model it was trained from (tokenizer.json, or vocab.json + merges.txt)")


def check_tokenizer(tokenizer, where) -> None:
    """UsageError for a tokenizer with no vocabulary: transformers builds one from a directory without
    tokenizer files, and it turns any text into a few special tokens (a perplexity "over 1 tokens")."""
    if len(tokenizer) <= len(set(tokenizer.all_special_ids)):
        raise _no_tokenizer(where)


def load_tokenizer(where):
    """``AutoTokenizer.from_pretrained(where)``, checked by :func:`check_tokenizer`.  From a local directory
    without tokenizer files transformers 5 builds an empty tokenizer, while 4.x raises (OSError "Can't load
    tokenizer", or a TypeError from the slow tokenizer opening its vocabulary file ``None``): all three are
    the same one line."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(where, trust_remote_code=False)
    except (OSError, TypeError):
        if not isinstance(where, Path) or any(where.glob("*tokenizer*.json")) or (where / "vocab.json").is_file():
            raise
        raise _no_tokenizer(where) from None
    check_tokenizer(tokenizer, where)
    return tokenizer


def load_model_and_tokenizer(spec: str = DEFAULT_MODEL, dtype: torch.dtype = torch.float32):
    """``(model, tokenizer)`` for a spec; the model is in eval mode on the CPU."""
    from transformers import AutoModelForCausalLM

    where = resolve_model_path(spec)
    if isinstance(where, Path):
        check_model_dir(where)
    # A local directory loads safetensors only (checked above: no pickle loading);
    # for hub ids transformers already prefers them when the repo offers both.
    safetensors = True if isinstance(where, Path) and any(where.glob("*.safetensors")) else None
    try:
        with offline_unless_reachable():
            tokenizer = load_tokenizer(where)
            model = AutoModelForCausalLM.from_pretrained(where, **dtype_kwarg(dtype), use_safetensors=safetensors,
                                                         trust_remote_code=False)
    except UsageError:
        raise
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
