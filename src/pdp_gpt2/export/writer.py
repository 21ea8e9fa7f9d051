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
from pathlib import Path

import torch
from torch import nn

from pdp_gpt2.atomic import normalize_modes
from pdp_gpt2.data.manifest import (MANIFEST, check_counts, check_description, pruned_weights, quant_bits,
                                    read_manifest, write_manifest)
from pdp_gpt2.errors import UsageError, disk_problem
from pdp_gpt2.export import compressed as C
from pdp_gpt2.export.card import export_card, shrink_card
from pdp_gpt2.export.outdir import REPORT, check_out, move_into_place, out_path
from pdp_gpt2.export.shrink import logit_gap, shrunk_manifest
from pdp_gpt2.export.shrink import shrink as shrink_model
from pdp_gpt2.pdp.patterns import PATTERNS, get_pattern
# The pieces of an export, importable from here as before (the CLI, benchmarks and tests do).
from pdp_gpt2.export.encode import (PRUNED_ZERO_SHARE, VALUES, encode_model, encode_tensor, pick_bits,  # noqa: F401
                                    pruned_tensors, tied_aliases)
from pdp_gpt2.export.sizes import markdown_table, size_report  # noqa: F401
from pdp_gpt2.export.source import (Source, load_finalized, quant_bits_hint, resolve_source, st_header,  # noqa: F401
                                    tokenizer_problem)

FORMATS = ("dense", "compressed", "2:4")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".safetensors.index.json", ".bin.index.json")


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
    ``shrink``: remove the MLP neurons and attention heads pruned whole and write the narrower model
    as a plain dense HF directory (shrink.py; ``fmt`` must be 'dense'), with its own card and manifest.
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
    if shrink and pattern is not None and _removes_nothing_whole(pattern):
        whole = " or ".join(name for name, cls in PATTERNS.items() if cls.coupled)
        raise UsageError(f"{model_dir} was pruned with --pattern {pattern}, which removes no whole unit, so the "
                         f"model stays as wide as it was: --shrink needs a run with --pattern {whole}")


def _removes_nothing_whole(pattern: str) -> bool:
    try:
        return not get_pattern(pattern).coupled
    except UsageError:  # a plugin's pattern not registered in this process: the shrink itself decides
        return False


def _write_shrunk(small: nn.Module, record: dict, manifest: dict | None, tmp: Path) -> None:
    """The shrunk model's config, weights and pdp_pruning.json, into ``tmp``."""
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
