"""An export's size report: bytes of the pruned weights and of all weight files, dense against
exported, read from the files on disk (not from the tensors in memory)."""
from __future__ import annotations

import json
from pathlib import Path

from pdp_gpt2.export import compressed as C
from pdp_gpt2.export.source import st_header


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
