"""The lowest floor: tensor math with no notion of a model or a method.

Mask math (mask.py), fused autograd kernels (fused.py), the exact batched selection of thresholds
and keep-masks for every target at once (select.py), shard layout and collectives (sharded.py),
and masked weights recomputed in backward rather than kept (recompute.py). Imports nothing of
pdp/ above it.
"""
