"""A flag the chosen method does not take (its MethodSpec capability is off) changes nothing in the run,
so its record leaves it out: summary.json, run_config.json, pdp_pruning.json and the card's command."""
import json

import pytest

from pdp_gpt2.cli import main
from pdp_gpt2.cli.main import build_parser
from pdp_gpt2.cli.train import config_from_args
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.train import card, flags, summary

TAU_FLAGS = {"tau", "tau_mode", "tau_schedule", "tau_final", "improved_masking", "beta"}


def _cfg(*argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def _summary(cfg):
    result = dict(ppl_dense=10.0, ppl_soft=11.0, ppl_hard=11.0, stats=None, train_steps=4, train_seconds=1.0,
                  ramp_steps=2, eval_tokens=100)
    return summary.run_summary(cfg, result, {"sparsity": 0.5, "numel": 8, "layers": {}}, "final")


def test_movement_records_no_tau_and_the_card_command_does_not_name_it():
    cfg = _cfg("--method", "movement", "--tau", "0.5", "--improved_masking", "--sparsity", "0.5")
    s = _summary(cfg)
    assert "tau" not in s and not TAU_FLAGS & set(s["config"]["pdp"])
    assert s["config"]["pdp"]["sparsity"] == 0.5 and s["config"]["schedule"] == "cubic"  # what movement takes
    assert card.command(cfg) == "pdp-gpt2 train --method movement --sparsity 0.5"
    pdp = _summary(_cfg("--tau", "0.5", "--improved_masking"))
    assert pdp["tau"] == 0.5 and pdp["config"]["pdp"]["improved_masking"] is True  # pdp takes them


def test_which_flags_a_method_ignores_comes_from_its_capabilities():
    others = {"wanda_groups", "sparsegpt_blocksize", "sparsegpt_percdamp"}  # the other methods' own options
    spec = registry.MethodSpec("mine", "x:Y", gradual=True)  # prunes on the schedule, no tau
    assert set(spec.ignored_flags()) == TAU_FLAGS | others
    assert set(registry.MethodSpec("oneshot", "x:Y").ignored_flags()) == TAU_FLAGS | others | {
        "schedule", "warmup_epochs", "warmup_steps"}
    assert set(registry.MethodSpec("soft", "x:Y", gradual=True, uses_tau=True).ignored_flags()) == others
    assert set(registry.get("wanda").ignored_flags()) & others == others - {"wanda_groups"}
    dense = set(registry.get("dense").ignored_flags())
    assert {"sparsity", "pattern", "quantize", "bits", "targets", "custom_optimizer", "schedule"} <= dense
    assert not {"learning_rate", "distill", "seed", "method"} & dense


def test_dense_and_one_shot_records_leave_out_what_they_ignore():
    dense = flags.recorded(_cfg("--method", "dense", "--sparsity", "0.5", "--quantize"))
    assert dense["pdp"] == {} and "schedule" not in dense and dense["learning_rate"] == 5e-4
    one_shot = flags.recorded(_cfg("--method", "magnitude", "--warmup_steps", "3"))
    assert "warmup_steps" not in one_shot and "schedule" not in one_shot and one_shot["pdp"]["sparsity"] == 0.9


def test_the_warning_names_only_ignored_flags_given_a_value():
    assert flags.ignored_values(_cfg("--method", "movement")) == {}  # defaults: nothing to warn about
    given = flags.ignored_values(_cfg("--method", "movement", "--tau", "0.5", "--improved_masking", "--beta", "5"))
    assert given == {"tau": 0.5, "improved_masking": True}
    assert flags.ignored_values(_cfg("--tau", "0.5")) == {}


@pytest.mark.slow
def test_a_movement_run_with_tau_warns_once_and_records_no_tau(tmp_path, tiny_assets, capfd):
    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    assert main(["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
                 "--method", "movement", "--tau", "0.5", "--improved_masking", "--sparsity", "0.5",
                 "--max_steps", "2", "--warmup_steps", "1", "--batch_size", "4", "--max_length", "32",
                 "--progress", "false", "--lr_warmup_steps", "0"]) == 0
    warnings = [ln for ln in capfd.readouterr().err.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and "--tau 0.5" in warnings[0] and "--improved_masking" in warnings[0], warnings
    s = json.loads((out / "summary.json").read_text())
    run_config = json.loads((out / "run_config.json").read_text())
    manifest = json.loads((out / "final" / "pdp_pruning.json").read_text())
    readme = (out / "final" / "README.md").read_text()
    assert "tau" not in s and not TAU_FLAGS & set(s["config"]["pdp"]) and not TAU_FLAGS & set(run_config["pdp"])
    assert manifest["tau"] is None and manifest["tau_mode"] is None and manifest["method"] == "movement"
    assert "--tau" not in readme and "improved" not in readme and "0.5 (" not in readme
    assert run_config["pdp"]["sparsity"] == 0.5 == s["sparsity_target"]
