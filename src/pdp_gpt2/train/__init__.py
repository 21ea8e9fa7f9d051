"""One training run: the Trainer adapter (all callbacks), the run directory, guard
(signals, NaN), distributed helpers, tracking, summary, dense pretraining, and the local
sweep runner (one `pdp-gpt2 train` subprocess per trial).

Import rule: may import ``pdp_gpt2.pdp``, ``pdp_gpt2.data``, ``pdp_gpt2.errors``,
``pdp_gpt2.atomic``, ``pdp_gpt2.names`` and ``pdp_gpt2.train.*``; never export, report or cli.
"""
