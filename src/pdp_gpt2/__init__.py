"""pdp-gpt2: Parameter-free Differentiable Pruning for Hugging Face causal LMs.

The public API (docs/integrate.md, docs/api.md)::

    trainer = Trainer(..., callbacks=[pdp_gpt2.PruningCallback(pdp_gpt2.PDPConfig(sparsity=0.9))])
    sched = pdp_gpt2.PruningSchedule(pdp_gpt2.attach(model, cfg), total_steps=1000)  # a plain loop
    pruner = pdp_gpt2.attach(model, cfg)   # soft masks on every target weight
    pruner.finalize()                      # exact zeros, a plain model again
    pdp_gpt2.sparsity_report(model)
"""
# name -> the module that defines it.  Imported on first use (PEP 562), so `import pdp_gpt2`
# and the plain schemas under it (pdp.config, train.config, pdp.registry) load no torch.
_API = {
    "PDPConfig": "pdp_gpt2.pdp.config",
    "UsageError": "pdp_gpt2.errors",
    "Pruner": "pdp_gpt2.pdp.methods.pdp.driver", "attach": "pdp_gpt2.pdp.core.attach", "sparsity_report": "pdp_gpt2.pdp.core.attach",
    "KernelOptions": "pdp_gpt2.pdp.kernels.fused",
    "hard_mask": "pdp_gpt2.pdp.kernels.mask", "soft_mask": "pdp_gpt2.pdp.kernels.mask", "threshold": "pdp_gpt2.pdp.kernels.mask",
    "MaskAwareAdamW": "pdp_gpt2.pdp.core.optim",
    "PruningSchedule": "pdp_gpt2.pdp.core.schedule", "sparsity_at": "pdp_gpt2.pdp.core.schedule", "tau_at": "pdp_gpt2.pdp.core.schedule",
    "MethodSpec": "pdp_gpt2.pdp.core.registry", "register_method": "pdp_gpt2.pdp.core.registry",
    "load_compressed": "pdp_gpt2.export.compressed_loader",
    "PruningCallback": "pdp_gpt2.pdp.callback",  # subclasses transformers.TrainerCallback
    **dict.fromkeys(("shard_model", "gather_plain_model", "save_sharded", "load_sharded"), "pdp_gpt2.fsdp"),
}
_RENAMED = {"register_method": "register"}

__version__ = "0.1.0"

__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'pdp_gpt2' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), _RENAMED.get(name, name))
    globals()[name] = value  # once: later lookups skip this function
    return value


def __dir__():
    return sorted([*globals(), *_API])
