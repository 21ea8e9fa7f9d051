"""The PDP core: mask math and kernels (mask.py, fused.py, recompute.py), the exact batched
selection (select.py, sharded.py), patterns, the parametrization (param.py), the drivers and their
registry (driver.py, attach.py, registry.py, baselines.py, movement.py, sparsegpt.py), schedules,
PDPConfig, and PruningCallback for any HF Trainer (callback.py, the one module that imports
transformers; loaded only when used).

Import rule: imports torch and, of this package, only ``pdp_gpt2.pdp.*``, ``pdp_gpt2.errors``,
``pdp_gpt2.atomic`` and ``pdp_gpt2.names`` (three leaves). Never data, train, export, report or
cli: the core must be usable (and testable) on a bare ``nn.Module`` with no run around it.
"""
