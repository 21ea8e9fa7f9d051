"""Data and models: corpus sources (bundled, hub, local, streaming) -> token blocks,
model/tokenizer loading, and perplexity.

Import rule: may import ``pdp_gpt2.errors``, ``pdp_gpt2.atomic`` and ``pdp_gpt2.data.*``;
never pdp, train, export, report or cli.
"""
