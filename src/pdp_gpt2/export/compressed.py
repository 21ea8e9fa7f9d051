"""The compressed file format, read side: per-tensor codecs and the container.

Codecs are pure (tensors in, tensors/arrays out): bitmask + values, and bitmask + b-bit codes +
per-channel scales (2:4 lives in nm24.py). The container is one safetensors file whose metadata
holds a JSON header with every tensor's layout, lengths and sha256, checked before anything is
decoded, and the sha256 of the export's other files; compressed_loader.py builds the model on top.
docs/format.md specifies the bytes (flattening order, bit order) and this module is its reference
reader. An entry's mask bit is 1 iff it compares != 0, so every zero decodes to +0.0: the
same as finalize writes, and equal in value and in matmul results to a -0.0 a model pruned
elsewhere may hold.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from pdp_gpt2.errors import UsageError
from pdp_gpt2.export.bits import pack_bits, pack_mask, packed_len, unpack_bits, unpack_mask  # noqa: F401
from pdp_gpt2.export.nm24 import decode_nm

# Candidate scales are s0 = amax / qmax and its neighbours a few ulps away: the
# weights were put on the grid by training with a scale computed from the
# weights *before* the last rounding, so amax / qmax recomputed from the rounded
# weights can be off by an ulp.
_ULP_STEPS = (0, 1, -1, 2, -2, 3, -3)


# ---- bitmask + values -------------------------------------------------------------


def encode_bitmask(w: torch.Tensor, values_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{'mask': uint8 bitmask, 'values': nonzero entries in flat order, as values_dtype}."""
    packed, nz = pack_mask(w)
    return {"mask": torch.from_numpy(packed), "values": w.reshape(-1)[nz].to(values_dtype).contiguous()}


def decode_bitmask(mask: torch.Tensor, values: torch.Tensor, shape, dtype: torch.dtype) -> torch.Tensor:
    numel = int(np.prod(shape))
    nz = unpack_mask(mask.numpy(), numel)
    if int(nz.sum()) != values.numel():
        raise ValueError(f"bitmask has {int(nz.sum())} ones but {values.numel()} values are stored")
    out = torch.zeros(numel, dtype=dtype)
    out[nz] = values.to(dtype)
    return out.view(*shape)


# ---- bitmask + b-bit codes + per-channel scales -------------------------------------


def _nudge(s: torch.Tensor, steps: int) -> torch.Tensor:
    toward = torch.full_like(s, float("inf") if steps > 0 else 0.0)
    for _ in range(abs(steps)):
        s = torch.nextafter(s, toward)
    return s


def _channels_first(w: torch.Tensor, channel_dim: int) -> torch.Tensor:
    return w.movedim(channel_dim, 0).reshape(w.shape[channel_dim], -1)


def codes_of(x: torch.Tensor, s: torch.Tensor, bits: int) -> torch.Tensor:
    """round(x / s) clamped to the symmetric b-bit range (the clamp matters in bf16: 127.5 rounds to 128)."""
    qmax = 2 ** (bits - 1) - 1
    return torch.round(x / s).clamp(-qmax, qmax)


def grid_scales(w: torch.Tensor, bits: int, channel_dim: int) -> torch.Tensor | None:
    """Per-channel scales s with round(w/s)*s == w exactly for every entry, else None.

    The grid is symmetric b-bit per output channel (codes in [-(2^(b-1)-1), 2^(b-1)-1]),
    the grid quantization masking trains on (pdp/kernels/mask.py:fake_quant).  The check
    runs in w's own dtype with the same multiply the decoder uses, so a success
    here is a bit-exact round trip.
    """
    if not w.is_floating_point() or w.dim() < 1:
        return None
    qmax = 2 ** (bits - 1) - 1
    c = _channels_first(w, channel_dim)
    amax = c.abs().amax(dim=1)
    s0 = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    best = s0.clone()
    found = torch.zeros(s0.shape, dtype=torch.bool)
    for steps in _ULP_STEPS:
        s = _nudge(s0, steps)
        codes = codes_of(c, s[:, None], bits)
        ok = (codes * s[:, None] == c).all(dim=1) & ~found
        best[ok], found = s[ok], found | ok
        if bool(found.all()):
            return best
    return None


def _scale_per_entry(scales: torch.Tensor, shape, channel_dim: int) -> torch.Tensor:
    view = [1] * len(shape)
    view[channel_dim] = -1
    return scales.view(view).expand(*shape).reshape(-1)


def encode_qcodes(w: torch.Tensor, bits: int, channel_dim: int, scales: torch.Tensor) -> dict[str, torch.Tensor]:
    """{'mask', 'codes' (offset binary code + 2^(b-1), packed), 'scales' (w.dtype, one per channel)}.

    Only nonzero entries get a code; their codes are never 0, so the stored
    unsigned field u = code + 2^(b-1) lies in [1, 2^b - 1] and fits b bits.
    """
    packed, nz = pack_mask(w)
    s = _scale_per_entry(scales, w.shape, channel_dim)[nz]
    codes = codes_of(w.reshape(-1)[nz], s, bits).to(torch.int16) + 2 ** (bits - 1)
    return {"mask": torch.from_numpy(packed),
            "codes": torch.from_numpy(pack_bits(codes.numpy().astype(np.uint8), bits)),
            "scales": scales.to(w.dtype).contiguous()}


def decode_qcodes(mask: torch.Tensor, codes: torch.Tensor, scales: torch.Tensor, shape, dtype: torch.dtype,
                  bits: int, channel_dim: int) -> torch.Tensor:
    numel = int(np.prod(shape))
    nz = unpack_mask(mask.numpy(), numel)
    nnz = int(nz.sum())
    if codes.numel() != packed_len(nnz, bits):
        raise ValueError(f"{codes.numel()} code bytes stored, {packed_len(nnz, bits)} expected for {nnz} nonzeros")
    q = torch.from_numpy(unpack_bits(codes.numpy(), nnz, bits).astype(np.int16)) - 2 ** (bits - 1)
    out = torch.zeros(numel, dtype=dtype)
    # Same dtype, same single multiply as grid_scales' check: bit-exact by construction.
    out[nz] = q.to(dtype) * _scale_per_entry(scales.to(dtype), shape, channel_dim)[nz]
    return out.view(*shape)


# ---- the file container: one safetensors file + a JSON header in its metadata -------------

FORMAT, VERSION = "pdp-gpt2-sparse", 1
WEIGHTS_FILE = "model.pdp.safetensors"  # not model.safetensors: plain from_pretrained must not half-read it
META_KEY = "pdp"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_of(name: str) -> torch.dtype:
    dt = getattr(torch, str(name), None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}")
    return dt


def header_digest(meta: dict) -> str:
    """sha256 of the header's canonical JSON (sorted keys, no spaces), ``header_sha256`` left out."""
    body = {k: v for k, v in meta.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def payload_entry(key: str, t: torch.Tensor) -> dict:
    """Header entry of one stored tensor: where it is, what it is, and its sha256."""
    raw = t.contiguous().reshape(-1).view(torch.uint8).numpy()  # the exact bytes safetensors writes (LE)
    return {"key": key, "dtype": dtype_name(t.dtype), "shape": list(t.shape), "nbytes": int(raw.nbytes),
            "sha256": hashlib.sha256(raw.tobytes()).hexdigest()}


def parse_container(data: bytes) -> tuple[dict, int]:
    """(safetensors JSON header, offset of the data region); ValueError unless the lengths add up."""
    if len(data) < 8:
        raise ValueError("shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if 8 + n > len(data):
        raise ValueError(f"header length {n} runs past the end of the {len(data)}-byte file (truncated?)")
    try:
        header = json.loads(bytes(data[8:8 + n]).decode("utf-8"))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, IndexError) as e:
        raise ValueError(f"unreadable header ({e})") from None
    if 8 + n + end != len(data):
        raise ValueError(f"data region is {len(data) - 8 - n} bytes but the header describes {end} (truncated?)")
    return header, 8 + n


def read_compressed(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(decoded state_dict without tied aliases, pdp header), after checking every length and checksum.

    Any inconsistency raises UsageError naming the file; nothing is decoded
    before all checks pass, so a caller never sees a partial model.
    """
    from safetensors.torch import load

    path = Path(path)
    data = path.read_bytes()
    try:
        st_header, start = parse_container(data)
        meta = json.loads(st_header.get("__metadata__", {}).get(META_KEY, "null"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"no {FORMAT!r} header in the safetensors metadata")
        if int(meta.get("version", 0)) > VERSION:
            raise UsageError(f"{path} is format version {meta['version']}; this pdp-gpt2 reads up to {VERSION}")
        if meta.get("header_sha256") != header_digest(meta):
            raise ValueError("header sha256 mismatch (bit flip in the JSON header)")
        view, referenced = memoryview(data), set()
        for name, spec in meta["tensors"].items():
            for role, p in spec["payloads"].items():
                b, e = st_header[p["key"]]["data_offsets"]
                if e - b != p["nbytes"]:
                    raise ValueError(f"{name} {role}: {e - b} bytes stored, header says {p['nbytes']}")
                if hashlib.sha256(view[start + b:start + e]).hexdigest() != p["sha256"]:
                    raise ValueError(f"{name} {role}: sha256 mismatch (bit flip or overwrite)")
                referenced.add(p["key"])
        if referenced != set(st_header) - {"__metadata__"}:
            raise ValueError("tensors in the file and in the pdp header differ")
        try:
            payloads = load(data)
        except Exception as e:  # safetensors' own error type is not a ValueError
            raise ValueError(str(e)) from None
        state = {name: decode_tensor(spec, payloads) for name, spec in meta["tensors"].items()}
    except UsageError:
        raise
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        why = f"missing entry {e}" if isinstance(e, KeyError) else str(e).splitlines()[0]
        raise UsageError(f"{path} is corrupt or not a pdp-gpt2 compressed model: {why}") from None
    return state, meta


def decode_tensor(spec: dict, payloads: dict[str, torch.Tensor]) -> torch.Tensor:
    """One dense tensor from its header entry and its stored payloads."""
    enc, shape, dtype = spec["encoding"], [int(s) for s in spec["shape"]], dtype_of(spec["dtype"])
    p = {role: payloads[e["key"]] for role, e in spec["payloads"].items()}
    if enc == "raw":
        out = p["data"]
    elif enc == "bitmask":
        if p["mask"].numel() != packed_len(int(np.prod(shape)), 1):
            raise ValueError(f"bitmask of {p['mask'].numel()} bytes does not fit shape {shape}")
        out = decode_bitmask(p["mask"], p["values"], shape, dtype)
    elif enc == "bitmask-qcodes":
        out = decode_qcodes(p["mask"], p["codes"], p["scales"], shape, dtype, int(spec["bits"]),
                            int(spec["channel_dim"]))
    elif enc == "nm":
        out = decode_nm(p["values"], p["indices"], shape, dtype, int(spec["group_dim"]), int(spec["n"]),
                        int(spec["m"]))
    else:
        raise UsageError(f"unknown tensor encoding {enc!r} (written by a newer pdp-gpt2?)")
    if list(out.shape) != shape or out.dtype != dtype:
        raise ValueError(f"decoded {list(out.shape)} {out.dtype}, header says {shape} {dtype}")
    return out


# ---- the export's other files: config.json, tokenizer, generation config -----------------------

# Not in the header's ``files``: the weights check themselves; the size report and the model card
# are read by no loader (neither transformers nor tokenizers opens them), so they may be edited.
NOT_CHECKSUMMED = (WEIGHTS_FILE, "size_report.json", "README.md")


def add_file_checksums(header: dict, export_dir: Path) -> dict:
    """``header`` with ``files``: {name: sha256} of every other file in ``export_dir`` (re-digested)."""
    files = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(export_dir).iterdir())
             if f.is_file() and f.name not in NOT_CHECKSUMMED}
    header = {**{k: v for k, v in header.items() if k != "header_sha256"}, "files": files}
    header["header_sha256"] = header_digest(header)
    return header


def check_files(export_dir: Path, header: dict) -> None:
    """UsageError naming the first file whose bytes differ from the header's ``files``, or that is
    there but not listed (exports written before ``files`` existed are not checked).

    ``files`` is the complete set the export was written with: transformers reads any
    added_tokens.json, special_tokens_map.json, chat_template.jinja, ... it finds, so one added
    later changes the tokenizer (and the perplexity) as surely as an edited one.  Only the
    NOT_CHECKSUMMED names and hidden ones (``.git``, ``.gitattributes`` of a hub clone; no
    loader opens a dotfile) may be added."""
    listed = header.get("files")
    if listed is None:
        return
    for name, digest in listed.items():
        f = Path(export_dir) / name
        if name in NOT_CHECKSUMMED:  # listed by exports written before README.md was exempt
            continue
        if not f.is_file():
            raise UsageError(f"{export_dir} is incomplete: {name} is missing")
        if hashlib.sha256(f.read_bytes()).hexdigest() != digest:
            raise UsageError(f"{f} is corrupt: sha256 mismatch with the export header (bit flip or edit)")
    extra = sorted(p.name for p in Path(export_dir).iterdir()
                   if p.name not in listed and p.name not in NOT_CHECKSUMMED and not p.name.startswith("."))
    if extra:
        raise UsageError(f"{Path(export_dir) / extra[0]} is not part of the export (its header lists every file "
                         "it was written with) and the tokenizer or the model could read it: remove it")
