"""Export a finalized sparse model so it is really smaller.

``export(src, out, fmt)`` reads a finalized HF directory (or a run directory holding ``final/``)
and writes ``dense`` (a copy), ``compressed`` (bitmask + nonzero values, or b-bit codes + scales on
a quantization grid) or ``2:4`` (kept values + 2-bit in-group indices). The sparse layouts are one
safetensors file (docs/format.md) read back by :func:`pdp_gpt2.load_compressed`. The zeros counted
in ``pdp_pruning.json`` are checked against the weights, and its descriptive fields against the
run's summary.json, first; the export is built in a temporary
sibling and renamed into place only when complete and verified (``--out``/``--overwrite``:
outdir.py), with ``size_report.json`` (sizes read from disk) and, for a sparse one, its own card.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pdp_gpt2.atomic import normalize_modes
from pdp_gpt2.export import compressed as C
from pdp_gpt2.export import nm24
from pdp_gpt2.export.card import export_card, shrink_card
from pdp_gpt2.export.outdir import REPORT, check_out, move_into_place, out_path
from pdp_gpt2.data.models import dtype_kwarg
from pdp_gpt2.data.manifest import (MANIFEST, check_counts, check_description, pruned_weights, quant_bits,
                                    read_manifest)
from pdp_gpt2.errors import UsageError, disk_problem
from pdp_gpt2.names import ORIGINAL
from pdp_gpt2.pdp.core.targets import PRUNABLE, Conv1D, find_targets

FORMATS = ("dense", "compressed", "2:4")
VALUES = {"auto": None, "fp16": torch.float16, "fp32": torch.float32}
# A Linear/Conv1D outside the default targets counts as pruned from this share of exact zeros
# (well above what a trained dense weight has by chance, well below any useful sparsity).
PRUNED_ZERO_SHARE = 0.25
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".safetensors.index.json", ".bin.index.json")


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
    from transformers import AutoModelForCausalLM

    from pdp_gpt2.data.models import check_safetensors

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
    from pdp_gpt2.data.models import load_tokenizer

    try:
        load_tokenizer(Path(model_dir))
    except (OSError, ValueError, UsageError) as e:
        return str(e).splitlines()[0]
    return None


def pruned_tensors(model: nn.Module, manifest: dict | None = None) -> dict[str, int]:
    """{weight name: output-channel axis} of the pruned targets.

    With the model directory's pdp_pruning.json (``manifest``): the tensors it lists as
    pruned.  Without one (models pruned before it was written): a guess, the default PDP
    targets that hold any exact zeros, plus any Linear/Conv1D weight with at least
    PRUNED_ZERO_SHARE exact zeros (custom target patterns).
    """
    if manifest is not None:
        pruned, state = pruned_weights(manifest), model.state_dict()
        if missing := sorted(set(pruned) - set(state)):
            raise UsageError(f"{MANIFEST} lists {missing[0]}, which the model does not have")
        return pruned
    try:
        default = {t.name for t in find_targets(model)}
    except UsageError:  # no numbered blocks, or a tied weight: fall back to the zero share alone
        default = set()
    out = {}
    for name, module in model.named_modules():
        w = getattr(module, "weight", None)
        if not isinstance(module, PRUNABLE) or w is None or w.dim() != 2:
            continue
        share = float((w == 0).float().mean())
        if (name in default and share > 0) or share >= PRUNED_ZERO_SHARE:
            out[f"{name}.weight" if name else "weight"] = 1 if Conv1D and isinstance(module, Conv1D) else 0
    return out


def tied_aliases(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """{later name: first name} for state_dict entries sharing storage (GPT-2's lm_head = wte)."""
    first, aliases = {}, {}
    for name, t in state.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype)
        if t.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
    return aliases


def pick_bits(w: torch.Tensor, channel_dim: int, hint: int | None) -> tuple[int, torch.Tensor] | None:
    """(bits, scales) of the smallest symmetric per-channel grid w lies on exactly, or None."""
    order = ([hint] if hint else []) + [b for b in range(2, 9) if b != hint]
    probe = w.narrow(channel_dim, 0, min(4, w.shape[channel_dim]))  # cheap rejection of off-grid tensors
    for bits in order:
        if C.grid_scales(probe, bits, channel_dim) is not None:
            scales = C.grid_scales(w, bits, channel_dim)
            if scales is not None:
                return bits, scales
    return None


def encode_tensor(name: str, w: torch.Tensor, fmt: str, channel_dim: int | None, values_dtype, hint,
                  codes: bool) -> tuple[dict, dict[str, torch.Tensor]]:
    """(header entry, {payload key: tensor}) of one state_dict tensor."""
    w = w.detach().cpu().contiguous()
    spec = {"shape": list(w.shape), "dtype": C.dtype_name(w.dtype)}
    if channel_dim is None:
        spec["encoding"], parts = "raw", {"data": w}
    elif fmt == "2:4":
        vd = values_dtype or w.dtype
        spec.update(encoding="nm", n=2, m=4, group_dim=1 - channel_dim, values_dtype=C.dtype_name(vd))
        parts = nm24.encode_nm(w.to(vd), 1 - channel_dim)
    else:
        nnz, vd = int((w != 0).sum()), values_dtype or w.dtype
        grid = pick_bits(w, channel_dim, hint) if codes else None
        sizes = {"raw": w.numel() * w.element_size(),
                 "bitmask": (w.numel() + 7) // 8 + nnz * torch.finfo(vd).bits // 8}
        if grid is not None:
            sizes["bitmask-qcodes"] = ((w.numel() + 7) // 8 + C.packed_len(nnz, grid[0])
                                       + w.shape[channel_dim] * w.element_size())
        spec["encoding"] = min(sizes, key=sizes.get)
        spec["nnz"] = nnz
        if spec["encoding"] == "raw":
            parts = {"data": w}
        elif spec["encoding"] == "bitmask":
            spec["values_dtype"] = C.dtype_name(vd)
            parts = C.encode_bitmask(w, vd)
        else:
            spec.update(bits=grid[0], channel_dim=channel_dim)
            parts = C.encode_qcodes(w, grid[0], channel_dim, grid[1])
    keys = {role: name if role == "data" else f"{name}/{role}" for role in parts}
    spec["payloads"] = {role: C.payload_entry(keys[role], t) for role, t in parts.items()}
    return spec, {keys[role]: t for role, t in parts.items()}


def encode_model(model: nn.Module, fmt: str, values: str = "auto", hint: int | None = None,
                 codes: bool = True, manifest: dict | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """(pdp header, safetensors payloads) of a finalized model; refuses patterns fmt can't hold."""
    state = model.state_dict()
    aliases = tied_aliases(state)
    pruned = pruned_tensors(model, manifest)
    if not pruned:
        raise UsageError("no exact zeros in the target weights: not a pruned model (finalize a PDP run first)")
    if fmt == "2:4":
        for name, out_dim in pruned.items():
            if (why := nm24.nm_violation(state[name], 1 - out_dim)) is not None:
                raise UsageError(f"{name} is not 2:4 sparse along its input dimension ({why}); "
                                 "use --format compressed")
    floating = [t.dtype for t in state.values() if t.is_floating_point()]
    header = {"format": C.FORMAT, "version": C.VERSION, "layout": fmt,
              "torch_dtype": C.dtype_name(floating[0] if floating else torch.float32),
              "tied": {a: aliases[a] for a in aliases}, "tensors": {}}
    payloads = {}
    for name, t in state.items():
        if name in aliases:
            continue
        # A tied alias of a pruned weight (rare) is pruned under its first name.
        channel_dim = pruned.get(name, next((pruned[a] for a, f in aliases.items() if f == name and a in pruned),
                                            None))
        spec, parts = encode_tensor(name, t, fmt, channel_dim, VALUES[values], hint, codes)
        header["tensors"][name] = spec
        payloads.update(parts)
    header["header_sha256"] = C.header_digest(header)
    return header, payloads


# ---- writing ---------------------------------------------------------------------------------


def export(src: str | Path, out: str | Path, fmt: str = "compressed", *, values: str = "auto",
           codes: bool = True, overwrite: bool = False, require_tokenizer: bool = False, shrink: bool = False) -> dict:
    """Write ``src`` (finalized model dir or run dir) to ``out`` in ``fmt``; returns the size report.

    ``values``: dtype of stored nonzeros, 'auto' = the model's own (exact);
    'fp16' halves them at fp16 rounding (the loaded model is then not identical).
    ``codes``: store weights that lie on a b-bit grid as codes + scales (exact).
    ``overwrite``: replace an earlier export in ``out`` (never anything else: outdir.py).
    ``require_tokenizer``: refuse a model without a tokenizer (the CLI does: eval and generate
    need one, and one added to an export later is refused by its loader); otherwise a note,
    since ``load_compressed`` needs none and a caller may bring the base model's.
    ``shrink``: remove the MLP neurons pruned whole and write the narrower model as a plain dense
    HF directory (shrink.py; ``fmt`` must be 'dense'), with its own card and manifest.
    """
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    if values not in VALUES:
        raise UsageError(f"unknown --values {values!r}: use one of {', '.join(VALUES)}")
    if shrink and (fmt != "dense" or values != "auto"):
        raise UsageError("--shrink writes a plain dense model in the model's own dtype: drop "
                         + (f"--format {fmt}" if fmt != "dense" else f"--values {values}"))
    source = resolve_source(src)
    out = out_path(out)
    check_out(out, source.model_dir, overwrite)
    _check_exportable(read_manifest(source.model_dir), source.model_dir, shrink)
    model = load_finalized(source.model_dir)  # first: a checkpoint (masks attached, no tokenizer) says so
    if (why := tokenizer_problem(source.model_dir)) is not None:
        if require_tokenizer:
            raise UsageError(f"{why}; an export of it could not be evaluated or generated from")
        print(f"pdp-gpt2 export: note: {source.model_dir} has no tokenizer; the export holds the weights alone "
              "(load_compressed works, pdp-gpt2 eval/generate refuse it)", flush=True)
    manifest = read_manifest(source.model_dir)  # which tensors are pruned, and the bits, as the run wrote them
    if manifest is None and not shrink:  # the shrink reads the zeros in any case
        print(f"pdp-gpt2 export: note: {source.model_dir} has no {MANIFEST} (pruned before runs wrote one); "
              "guessing the pruned tensors from their zeros", flush=True)
    else:
        check_counts(manifest, model.state_dict(), source.model_dir)
        check_description(manifest, source.summary, source.model_dir)  # what the card and the seal will say
    hint = quant_bits(manifest) if manifest is not None else quant_bits_hint(source.summary)
    small = None
    if shrink:
        from pdp_gpt2.export.shrink import logit_gap, shrink as shrink_model

        small, record = shrink_model(model)
        if logit_gap(model, small) > (1e-4 if small.dtype in (torch.float32, torch.float64) else 5e-2):
            raise RuntimeError("the shrunk model's logits differ from the pruned model's")  # internal bug
        header = None
    elif fmt == "dense":
        if not pruned_tensors(model, manifest):
            raise UsageError(f"{source.model_dir}: no exact zeros in the target weights: not a pruned model")
        header = None
    else:
        header, payloads = encode_model(model, fmt, values, hint, codes, manifest)
    try:  # a read-only or missing place, or a full disk, is the user's to fix: one line, nothing left behind
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        for f in sorted(source.model_dir.iterdir()):
            weights = f.name.endswith(WEIGHT_SUFFIXES)
            own_card = header is not None and f.name == "README.md"  # final/'s card says AutoModelForCausalLM
            rewritten = small is not None and (weights or f.name in ("README.md", MANIFEST, "config.json"))
            if f.is_file() and f.name != REPORT and not own_card and not rewritten and (fmt == "dense" or not weights):
                shutil.copy2(f, tmp / f.name)
        if small is not None:
            _write_shrunk(small, record, manifest, tmp)
        if header is not None:
            from safetensors.torch import save_file

            header = C.add_file_checksums(header, tmp)  # every copied file: config.json, tokenizer, ...
            save_file(payloads, str(tmp / C.WEIGHTS_FILE), metadata={C.META_KEY: json.dumps(header)})
            _verify(tmp, model.state_dict(), header)
        aliases = tied_aliases(model.state_dict())
        if small is None:
            pruned = sorted({aliases.get(n, n) for n in pruned_tensors(model, manifest)})  # a tied tensor counts once
        else:  # the sliced weights: what the shrink made smaller
            pruned = sorted(n for n in record["shapes"] if n.endswith(".weight"))
        report = size_report(source.model_dir, tmp, "shrunk" if shrink else fmt, header, pruned, aliases)
        report.update(source=str(source.model_dir), out=str(out), values=values)
        if header is not None:
            (tmp / "README.md").write_text(export_card(fmt, report, manifest, markdown_table(report)))
        if small is not None:
            report["shrink"] = {k: v for k, v in record.items() if k != "shapes"}
            (tmp / "README.md").write_text(shrink_card(record, report, manifest, markdown_table(report)))
        report["files"] = sorted({p.name for p in tmp.iterdir()} | {REPORT})  # what --overwrite may replace
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
        normalize_modes(tmp)  # mkdtemp's 0700, safetensors' 0600, a copied file's own mode
        move_into_place(tmp, out, overwrite)
    except Exception as e:  # safetensors says "No space left on device" in its own exception type
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, UsageError) and (why := disk_problem(e)) is not None:
            raise UsageError(f"--out {out}: {why} while writing the export; nothing was written") from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report


def _check_exportable(manifest: dict | None, model_dir: Path, shrink: bool) -> None:
    """Before loading: refuse a shrink of a model pruned in another pattern, and any export of a shrunk
    model with no zeros left (it is a plain dense model already; an export of it would not be smaller)."""
    if manifest is None:
        return
    if manifest.get("shrink") is not None and not pruned_weights(manifest):
        raise UsageError(f"{model_dir} is a shrunk model with no zeros left: it is already a plain dense model "
                         "(load it as it is; an export or another shrink would not make it smaller)")
    pattern = manifest.get("pattern")
    if shrink and pattern is not None and pattern != "neurons":
        raise UsageError(f"{model_dir} was pruned with --pattern {pattern}, which leaves every MLP as wide as it "
                         "was: --shrink needs a run with --pattern neurons")


def _write_shrunk(small: nn.Module, record: dict, manifest: dict | None, tmp: Path) -> None:
    """The shrunk model's config, weights and pdp_pruning.json, into ``tmp``."""
    from pdp_gpt2.data.manifest import write_manifest
    from pdp_gpt2.export.shrink import shrunk_manifest

    small.save_pretrained(tmp)  # config.json (the new width), model.safetensors, generation_config.json
    write_manifest(tmp, shrunk_manifest(manifest, small.state_dict(), record))


def _verify(out_dir: Path, state: dict[str, torch.Tensor], header: dict) -> None:
    """Decode the written file and compare with the model (rounded to the stored value dtype)."""
    decoded, _ = C.read_compressed(out_dir / C.WEIGHTS_FILE)
    for name, spec in header["tensors"].items():
        want = state[name].detach().cpu()
        if "values_dtype" in spec:
            want = want.to(C.dtype_of(spec["values_dtype"])).to(want.dtype)
        if not torch.equal(decoded[name], want):  # internal bug, not user error
            raise RuntimeError(f"export verification failed for {name} ({spec['encoding']})")


# ---- sizes, measured on disk -------------------------------------------------------------------


def _tensor_bytes(files) -> dict[str, int]:
    sizes = {}
    for f in files:
        for k, v in st_header(f).items():
            if k != "__metadata__":
                sizes[k] = v["data_offsets"][1] - v["data_offsets"][0]
    return sizes


def _stored_bytes(sizes: dict[str, int], name: str, aliases: dict[str, str]) -> int:
    """Bytes of `name` in a HF safetensors file, which holds a tied tensor under one of its names."""
    for n in [name] + [a for a, f in aliases.items() if f == name]:
        if n in sizes:
            return sizes[n]
    raise RuntimeError(f"{name} not found in the safetensors files")


def size_report(src_dir: Path, out_dir: Path, fmt: str, header: dict | None, pruned: list[str],
                aliases: dict[str, str]) -> dict:
    """Bytes of the pruned target weights and of all weight files, dense vs exported, from the files."""
    dense_files = sorted(src_dir.glob("*.safetensors"))
    dense = _tensor_bytes(dense_files)
    d_target = sum(_stored_bytes(dense, n, aliases) for n in pruned)
    d_total = sum(f.stat().st_size for f in dense_files)
    counts: dict[str, int] = {}
    if header is None:
        out_files = sorted(out_dir.glob("*.safetensors"))
        out = _tensor_bytes(out_files)
        e_target = sum(_stored_bytes(out, n, aliases) for n in pruned)
        e_total = sum(f.stat().st_size for f in out_files)
        counts[fmt] = len(pruned)
    else:
        f = out_dir / C.WEIGHTS_FILE
        stored = _tensor_bytes([f])
        meta = json.loads(st_header(f)["__metadata__"][C.META_KEY])
        e_target = sum(stored[p["key"]] for n in pruned for p in meta["tensors"][n]["payloads"].values())
        e_total = f.stat().st_size
        for n in pruned:
            spec = meta["tensors"][n]
            enc = spec["encoding"] + (f"/{spec['bits']}-bit" if "bits" in spec else "")
            counts[enc] = counts.get(enc, 0) + 1
    return {"format": fmt, "pruned_tensors": len(pruned), "encodings": counts,
            "target_weights": {"dense_bytes": d_target, "exported_bytes": e_target, "ratio": e_target / d_target},
            "whole_model": {"dense_bytes": d_total, "exported_bytes": e_total, "ratio": e_total / d_total}}


def markdown_table(report: dict) -> str:
    rows = [("target weights (%d tensors)" % report["pruned_tensors"], report["target_weights"]),
            ("whole model (weight files)", report["whole_model"])]
    lines = ["| weights | dense bytes | exported bytes | ratio |", "|---|---:|---:|---:|"]
    lines += [f"| {label} | {r['dense_bytes']:,} | {r['exported_bytes']:,} | {r['ratio']:.4f} |" for label, r in rows]
    return "\n".join(lines)
