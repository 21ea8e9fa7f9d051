"""The PDP core: pure mask math (mask.py, fused.py), the exact batched selection of thresholds
and keep-masks (select.py), patterns (patterns.py), the parametrization (param.py) and its
backward recompute (recompute.py), the driver lifecycle (driver.py, attach.py, baselines.py),
the method registry (registry.py, no torch), FSDP2 shards (sharded.py), schedules
(schedule.py), PDPConfig (config.py), and
PruningCallback for any HF Trainer (callback.py, the one module that imports
transformers; loaded only when used).

Import rule: imports torch and, of this package, only ``pdp_gpt2.pdp.*``,
``pdp_gpt2.errors``, ``pdp_gpt2.atomic`` and ``pdp_gpt2.names`` (three leaves). Never data, train, export, report or cli: the core must be usable
(and testable) on a bare ``nn.Module`` with no run around it.
"""
