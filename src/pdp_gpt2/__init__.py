"""pdp-gpt2: Parameter-free Differentiable Pruning for Hugging Face causal LMs.

The public API::

    # inside your own HF Trainer: one line (attach, schedule, log, checkpoint, finalize)
    trainer = Trainer(..., callbacks=[pdp_gpt2.PruningCallback(pdp_gpt2.PDPConfig(sparsity=0.9))])
    # a plain loop: the schedule object, .step() after optimizer.step()
    sched = pdp_gpt2.PruningSchedule(pdp_gpt2.attach(model, cfg), total_steps=1000)
    # the low level
    cfg = pdp_gpt2.PDPConfig(sparsity=0.9)  # tau 0.1 annealed to 0.001 by the schedule (the default)
    pruner = pdp_gpt2.attach(model, cfg)   # soft masks on every target weight
    pruner.set_sparsity(0.5)               # the schedule calls this (and set_tau)
    pruner.step()                          # after each optimizer step
    pruner.finalize()                      # exact zeros, plain model again
    pdp_gpt2.sparsity_report(model)
"""
from pdp_gpt2.export.compressed import load_compressed
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.attach import Pruner, attach, sparsity_report
from pdp_gpt2.pdp.fused import KernelOptions
from pdp_gpt2.pdp.mask import hard_mask, soft_mask, threshold
from pdp_gpt2.pdp.optim import MaskAwareAdamW
from pdp_gpt2.pdp.schedule import PruningSchedule, sparsity_at, tau_at

__version__ = "0.1.0"

__all__ = [
    "PDPConfig", "Pruner", "attach", "soft_mask", "hard_mask", "threshold", "sparsity_report",
    "sparsity_at", "MaskAwareAdamW", "UsageError", "__version__", "load_compressed",
    "PruningCallback", "PruningSchedule", "tau_at", "KernelOptions",
]


def __getattr__(name: str):
    # PruningCallback subclasses transformers.TrainerCallback: imported on first use, so
    # `import pdp_gpt2` stays light for code that never builds a Trainer.
    if name == "PruningCallback":
        from pdp_gpt2.pdp.callback import PruningCallback

        return PruningCallback
    raise AttributeError(f"module 'pdp_gpt2' has no attribute {name!r}")
