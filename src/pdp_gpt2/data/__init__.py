"""Data and models: a dataset spec -> pieces (lines, rows) -> documents -> token blocks, in
memory or streamed, from one document source (sources.py) under one set of split rules
(splits.py); model/tokenizer loading; perplexity; and the ``pdp_pruning.json`` schema
(manifest.py), here because training writes it and export reads it.

Import rule: may import ``pdp_gpt2.errors``, ``pdp_gpt2.atomic``, ``pdp_gpt2.names`` and ``pdp_gpt2.data.*``;
never pdp, train, export, report or cli.
"""
