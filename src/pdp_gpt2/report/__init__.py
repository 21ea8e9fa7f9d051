"""Report, plots and slides. Reads run outputs (files) only: summary.json, metrics.jsonl,
sweep.csv; the sweep runner that writes sweep.csv runs training, so it lives in train/.

Import rule: may import ``pdp_gpt2.errors``, ``pdp_gpt2.atomic``, ``pdp_gpt2.report.*`` and the
method registry ``pdp_gpt2.pdp.core.registry`` (also under its old path ``pdp_gpt2.pdp.registry``; no
torch: labels, colours, capabilities); never the rest of the core, the training code, export or cli.
"""
