"""A method's calibration set (wanda, sparsegpt): a seeded draw of the run's prepared training
blocks, the same draw whether they are in memory or streamed."""
from __future__ import annotations

import torch

from pdp_gpt2.data.sources import LMBlockDataset


def calibration_blocks(train_data, seed: int, n_blocks: int = 32) -> torch.Tensor:
    """``n_blocks`` of the prepared training blocks, drawn by ``seed`` (wanda's calibration set).

    A stream (--streaming) yields the in-memory path's blocks in the same order, so it gives the
    same draw: one pass counts them, a second picks the drawn ones (memory stays flat)."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(train_data, LMBlockDataset):
        return train_data.blocks[torch.randperm(len(train_data), generator=gen)[:n_blocks]]
    drawn = torch.randperm(sum(1 for _ in train_data.blocks()), generator=gen)[:n_blocks].tolist()
    wanted = set(drawn)
    picked = {i: block for i, block in enumerate(train_data.blocks()) if i in wanted}
    return torch.stack([picked[i] for i in drawn])
