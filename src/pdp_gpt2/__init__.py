"""pdp-gpt2: Parameter-free Differentiable Pruning for Hugging Face causal LMs.

The public API::

    cfg = pdp_gpt2.PDPConfig(sparsity=0.9, tau=0.02)
    pruner = pdp_gpt2.attach(model, cfg)   # soft masks on every target weight
    pruner.set_sparsity(0.5)               # the schedule calls this
    pruner.step()                          # after each optimizer step
    pruner.finalize()                      # exact zeros, plain model again
    pdp_gpt2.sparsity_report(model)
"""
from pdp_gpt2.export.compressed import load_compressed
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.attach import Pruner, attach, sparsity_report
from pdp_gpt2.pdp.mask import hard_mask, soft_mask, threshold
from pdp_gpt2.pdp.optim import MaskAwareAdamW
from pdp_gpt2.pdp.schedule import sparsity_at

__version__ = "0.1.0"

__all__ = [
    "PDPConfig", "Pruner", "attach", "soft_mask", "hard_mask", "threshold", "sparsity_report",
    "sparsity_at", "MaskAwareAdamW", "UsageError", "__version__", "load_compressed",
]
