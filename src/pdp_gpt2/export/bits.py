"""Bit streams shared by every codec: b-bit fields and 1-bit masks, little-endian at the bit level.

Stream bit k is bit (k % 8) of byte k // 8 (``np.packbits(..., bitorder="little")``); a b-bit
field j occupies stream bits [j*b, (j+1)*b), least significant bit first (docs/format.md).
Its own module so compressed.py and nm24.py both build on it without importing each other.
"""
from __future__ import annotations

import numpy as np
import torch


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned integers < 2**bits -> uint8 little-endian bit stream of len ceil(n*bits/8)."""
    v = np.ascontiguousarray(values, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return v.copy()
    planes = (v[:, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (n, bits), LSB first
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, count: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` fields as uint8."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    if bits == 8:
        return packed[:count].copy()
    planes = np.unpackbits(packed, count=count * bits, bitorder="little").reshape(count, bits)
    return (planes << np.arange(bits, dtype=np.uint8)).sum(axis=1, dtype=np.uint8)


def packed_len(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack_mask(w: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
    """(packed bitmask of w != 0, the boolean mask itself, flattened)."""
    nz = (w != 0).reshape(-1)
    return np.packbits(nz.cpu().numpy(), bitorder="little"), nz


def unpack_mask(packed: np.ndarray, numel: int) -> torch.Tensor:
    return torch.from_numpy(np.unpackbits(np.asarray(packed, dtype=np.uint8), count=numel,
                                          bitorder="little").astype(bool))
