"""Report, plots and the sweep runner. Reads run outputs (files) only; sweeps start
`pdp-gpt2 train` as subprocesses.

Import rule: may import ``pdp_gpt2.errors``, ``pdp_gpt2.atomic``, ``pdp_gpt2.pdp.config``
and ``pdp_gpt2.train.config`` (plain dataclasses: the schema of a run's files), and
``pdp_gpt2.report.*``; never the training code, export or cli.
"""
