"""Export formats, writers, the loader and runtimes. Reads a model directory, never a trainer.

Import rule: may import ``pdp_gpt2.pdp`` (target selection), ``pdp_gpt2.data`` (model
loading), ``pdp_gpt2.errors``, ``pdp_gpt2.atomic``, ``pdp_gpt2.names`` and ``pdp_gpt2.export.*``; never train,
report or cli.
"""
