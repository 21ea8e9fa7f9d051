"""One-shot magnitude pruning at the target, mask frozen."""
