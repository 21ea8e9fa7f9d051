"""The PDP core, in floors: ``kernels/`` (tensor math, selection, shards) < ``patterns/``
(what a group is) < ``core/`` (the driver lifecycle, registry, schedule, targets, config) <
``methods/<name>/`` (one package per method) < ``config.py`` (the flat PDPConfig, every method's
settings) < ``callback.py`` (PruningCallback for any HF Trainer, the one module that imports
transformers). The other modules directly in this folder are old import paths, kept for
importers outside the core (the same module objects).

Import rule: imports torch and, of this package, only ``pdp_gpt2.pdp.*``, ``pdp_gpt2.errors``,
``pdp_gpt2.atomic`` and ``pdp_gpt2.names`` (three leaves). Never data, train, export, report or
cli: the core must be usable (and testable) on a bare ``nn.Module`` with no run around it.
"""
