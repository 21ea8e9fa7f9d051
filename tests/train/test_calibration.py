"""Wanda's calibration set comes from the blocks `prepare` built, not from a second tokenization:
the same draw (seed) from the in-memory blocks and from the stream."""
import torch
from transformers import AutoTokenizer

from pdp_gpt2.data.sources import LMBlockDataset, load_split_texts, tokenize_and_group
from pdp_gpt2.data.streaming import StreamingBlocks, pieces
from pdp_gpt2.train.calibration import calibration_blocks


def test_calibration_blocks_are_the_seeded_draw_of_the_prepared_blocks(tiny_assets):
    model_dir, corpus = tiny_assets
    tok = AutoTokenizer.from_pretrained(model_dir)
    blocks = tokenize_and_group(tok, load_split_texts(str(corpus), "train"), 32)
    want = blocks[torch.randperm(len(blocks), generator=torch.Generator().manual_seed(3))[:32]]
    stream = StreamingBlocks(lambda: pieces(str(corpus), "train"), tok, 32)
    assert len(blocks) > 32 and want.shape == (32, 32)
    assert torch.equal(calibration_blocks(LMBlockDataset(blocks), seed=3), want)
    assert torch.equal(calibration_blocks(stream, seed=3), want)  # two passes over the stream, same draw
    assert not torch.equal(calibration_blocks(LMBlockDataset(blocks), seed=4), want)
