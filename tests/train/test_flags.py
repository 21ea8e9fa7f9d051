"""One set of defaults (train/flags.py) for the train command's parser and for the command the
model card writes: a run with no flags is `pdp-gpt2 train`, and a flag only appears when it differs."""
from pdp_gpt2.cli.main import build_parser
from pdp_gpt2.cli.train import config_from_args
from pdp_gpt2.train import card, flags


def _cfg(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_the_parser_holds_cli_defaults():
    args = vars(build_parser().parse_args(["train"]))
    defaults = flags.cli_defaults()
    assert set(defaults) == {f.name for f in flags.fields()} and defaults["sparsity"] is None
    assert {k: args[k] for k in defaults} == defaults


def test_dependent_defaults_resolve_as_parsing_does_and_the_card_leaves_them_out():
    cfg = _cfg()
    resolved = flags.cli_defaults(cfg.pdp)
    assert resolved["sparsity"] == cfg.pdp.sparsity == 0.9 and resolved["tau_final"] == cfg.pdp.tau_final > 0
    assert card.command(cfg) == "pdp-gpt2 train"
    nm = _cfg("--pattern", "2:4", "--tau", "0.05")
    assert nm.pdp.sparsity == flags.cli_defaults(nm.pdp)["sparsity"] == 0.5  # 2:4 implies its own
    # the shared settings, then the method's own; tau_final follows tau: not named
    assert card.command(nm) == "pdp-gpt2 train --pattern 2:4 --tau 0.05"
    assert card.command(_cfg("--sparsity", "0.5")) == "pdp-gpt2 train --sparsity 0.5"  # unstructured: 0.9 is its default
