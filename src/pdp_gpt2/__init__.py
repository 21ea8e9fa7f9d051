"""pdp-gpt2: Parameter-free Differentiable Pruning for Hugging Face causal LMs."""
__version__ = "0.1.0"
