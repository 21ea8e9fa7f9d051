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


# A manifest field and where the run's own summary.json has it (top level, or in config.pdp).
_SUMMARY_FIELDS = {"method": ("method",), "sparsity_target": ("sparsity_target",),
                   "sparsity_actual": ("sparsity_actual",), "base_model": ("model",), "dataset": ("dataset",),
                   "pattern": ("config", "pdp", "pattern"), "allocation": ("config", "pdp", "allocation"),
                   "tau": ("config", "pdp", "tau"), "tau_mode": ("config", "pdp", "tau_mode"),
                   "bits": ("config", "pdp", "bits")}
_NOT_APPLICABLE = ("pattern", "allocation", "tau", "tau_mode", "bits")  # null where the method has none


def check_description(manifest: dict, summary: dict | None, where) -> None:
    """UsageError unless the manifest's descriptive fields (method, targets, pattern, tau, bits, base
    model, dataset) say what the run's summary.json says, or, without one, unless ``sparsity_target`` is
    what its tensors' own targets make: export seals the manifest into its files and its card."""
    path = Path(where) / MANIFEST
    if isinstance(summary, dict):
        for name, keys in _SUMMARY_FIELDS.items():
            said, recorded = manifest.get(name), _lookup(summary, keys)
            if recorded is _MISSING or (said is None and name in _NOT_APPLICABLE):
                continue
            if name == "bits" and _lookup(summary, ("config", "pdp", "quantize")) is False:
                recorded = None  # bits apply only to a quantized run
            if not _same(said, recorded):
                raise UsageError(f"{path} says {name} {said!r}, the run's summary.json says {recorded!r}: the "
                                 "manifest was edited or belongs to another run; restore it before exporting")
        return
    tensors = [t for t in manifest["tensors"].values() if isinstance(t, dict)]
    if not tensors or any(not isinstance(t.get("target_sparsity"), (int, float)) or not isinstance(t.get("numel"), int)
                          for t in tensors):
        return  # check_counts has refused malformed entries already; an old manifest without targets says nothing
    made = sum(t["target_sparsity"] * t["numel"] for t in tensors) / max(sum(t["numel"] for t in tensors), 1)
    said = manifest.get("sparsity_target")
    if not isinstance(said, (int, float)) or abs(said - made) > 1e-3:
        raise UsageError(f"{path} says sparsity_target {said!r}, its tensors' targets make {made:.4f}: the manifest "
                         "was edited or belongs to another model; restore it before exporting")


_MISSING = object()


def _lookup(d: dict, keys: tuple):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return _MISSING
        d = d[k]
    return d


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(a - b) <= 1e-9
    return a == b
