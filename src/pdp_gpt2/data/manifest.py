"""``pdp_pruning.json``: what a pruned model directory says about itself.

A run writes it into ``final/`` next to the weights (train/summary.py); export reads it to know
which tensors are pruned and on which quantization grid, instead of guessing from zeros, and
recounts the zeros (:func:`check_counts`), since the manifest is copied into an export and sealed
by its checksum. It lives in data/ because both sides may import data/ and neither may import
the other. The layout (version 1) is in docs/format.md, "pdp_pruning.json".
"""
from __future__ import annotations

import json
from pathlib import Path

from pdp_gpt2.atomic import atomic_write_json
from pdp_gpt2.errors import UsageError

MANIFEST = "pdp_pruning.json"
FORMAT = "pdp-gpt2/pruning"
VERSION = 1


def write_manifest(model_dir: Path, manifest: dict) -> None:
    atomic_write_json(Path(model_dir) / MANIFEST, {"format": FORMAT, "version": VERSION, **manifest})


def read_manifest(model_dir: Path) -> dict | None:
    """The manifest of a model directory; None if it has none (pruned before manifests existed)."""
    path = Path(model_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        m = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT or not isinstance(m.get("tensors"), dict):
        raise UsageError(f"{path} is not a pdp-gpt2 pruning manifest (format {FORMAT!r} with tensors)")
    if m.get("version") != VERSION:
        raise UsageError(f"{path} has manifest version {m.get('version')}; this pdp-gpt2 reads version {VERSION}")
    return m


def pruned_weights(manifest: dict) -> dict[str, int]:
    """{weight name: output-channel axis} of the tensors the manifest says are pruned."""
    return {name: int(t["out_dim"]) for name, t in manifest["tensors"].items() if t.get("target_sparsity", 0) > 0}


def quant_bits(manifest: dict) -> int | None:
    bits = manifest.get("bits")
    return int(bits) if bits is not None else None


def check_counts(manifest: dict, state, where) -> None:
    """UsageError unless each listed tensor has the manifest's shape, numel and zeros in ``state``
    ({name: tensor}) and ``sparsity_actual`` is their zeros over their weights (what a run wrote:
    an edited manifest, or one from another model, would otherwise travel on as the truth)."""
    path, zeros, numel = Path(where) / MANIFEST, 0, 0
    for name, t in manifest["tensors"].items():
        w = state.get(name)
        if w is None:
            raise UsageError(f"{path} lists {name}, which the model does not have")
        got = {"shape": list(w.shape), "numel": w.numel(), "zeros": int((w == 0).sum())}
        for key, value in got.items():
            if not isinstance(t, dict) or t.get(key) != value:
                said = t.get(key) if isinstance(t, dict) else t
                raise UsageError(f"{path} says {name} has {key} {said}, its weights have {value}: the manifest "
                                 "was edited or belongs to another model; restore it (or delete it to export "
                                 "from the zeros alone)")
        zeros, numel = zeros + got["zeros"], numel + got["numel"]
    actual, counted = manifest.get("sparsity_actual"), zeros / max(numel, 1)
    if not isinstance(actual, (int, float)) or abs(actual - counted) > 1e-9:
        raise UsageError(f"{path} says sparsity_actual {actual}, its weights have {counted:.6f}: the manifest "
                         "was edited or belongs to another model; restore it (or delete it to export from the "
                         "zeros alone)")
