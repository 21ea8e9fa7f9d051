"""What an export reads: a run directory or a finalized model directory, its run's summary.json
(and the quantization bits it recorded), safetensors headers, and the model itself, refused while
it still carries masks or lacks weights.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from transformers import AutoModelForCausalLM

from pdp_gpt2.data.models import check_safetensors, dtype_kwarg, load_tokenizer
from pdp_gpt2.errors import UsageError
from pdp_gpt2.names import ORIGINAL


@dataclass
class Source:
    model_dir: Path
    summary: dict | None  # the training run's summary.json, when src was a run directory


def resolve_source(src: str | Path) -> Source:
    """A run directory (has final/) or a plain HF model directory with safetensors weights."""
    path = Path(src).expanduser()
    if not path.is_dir():
        raise UsageError(f"{src}: no such directory")
    summary = None
    if (path / "final").is_dir():
        summary = _run_summary(path)
        path = path / "final"
    elif path.name == "final":  # a run's final/ given directly: the run's record is beside it
        summary = _run_summary(path.parent)
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} is neither a model directory (no config.json) nor a run directory (no final/)")
    if not list(path.glob("*.safetensors")):
        raise UsageError(f"{path} has no .safetensors weights (export reads finalized safetensors models)")
    return Source(path, summary)


def _run_summary(run_dir: Path) -> dict | None:
    """The run's summary.json, or None if it has none."""
    if not (run_dir / "summary.json").is_file():
        return None
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{run_dir / 'summary.json'} is not valid JSON: {e}") from None


def quant_bits_hint(summary) -> int | None:
    """bits from a training summary that used quantization masking (any nesting), else None."""
    if isinstance(summary, dict):
        if summary.get("quantize") is True and isinstance(summary.get("bits"), int):
            return summary["bits"]
        if isinstance(summary.get("quantize/bits"), int):
            return summary["quantize/bits"]
        for v in summary.values():
            if (b := quant_bits_hint(v)) is not None:
                return b
    return None


def st_header(f: Path) -> dict:
    """The JSON header of a safetensors file (names, dtypes, shapes, byte offsets), data unread."""
    with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        head = fh.read(n)
    try:
        return json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError(f"{f} is not a readable safetensors file") from None


def load_finalized(model_dir: Path) -> nn.Module:
    """The model in its stored dtype; refuses one that still carries PDP parametrizations."""
    check_safetensors(model_dir)  # empty or truncated weights: one line, not a loader traceback
    for f in model_dir.glob("*.safetensors"):
        if any(ORIGINAL in k for k in st_header(f)):
            raise UsageError(f"{model_dir} is not finalized: it still has PDP masks (parametrizations keys); "
                             "call Pruner.finalize() before saving")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(model_dir, **dtype_kwarg("auto"), use_safetensors=True,
                                                           trust_remote_code=False, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot load model from {model_dir}: {str(e).splitlines()[0]}") from None
    # Missing weights would be random-initialized and then exported as if they were the model.
    if info["missing_keys"] or info["mismatched_keys"]:
        bad = sorted(info["missing_keys"] or info["mismatched_keys"])
        raise UsageError(f"{model_dir} is incomplete: {len(bad)} weights missing or mis-shaped (first: {bad[0]})")
    return model.eval()


def tokenizer_problem(model_dir: Path) -> str | None:
    """Why ``model_dir`` has no usable tokenizer (transformers builds an empty one from a directory
    without tokenizer files), or None."""
    try:
        load_tokenizer(Path(model_dir))
    except (OSError, ValueError, UsageError) as e:
        return str(e).splitlines()[0]
    return None
