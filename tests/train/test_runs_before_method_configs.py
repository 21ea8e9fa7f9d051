"""Runs written before each method had a config of its own (one flat PDPConfig in every record)
still resume, report and export-check. runs_before_method_configs/ holds the JSON files of three
tiny runs (gmp; pdp at tau 0.05; wanda --wanda_groups tensor; 4 steps, ramp 2, checkpoints at 2
and 4) as that code wrote them: run_config.json, summary.json, final/pdp_pruning.json and
checkpoint-2/pdp_state.json."""
import json
from pathlib import Path

import pytest

from helpers import tiny_gpt2
from pdp_gpt2.data.manifest import check_description, read_manifest
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.core.attach import attach
from pdp_gpt2.pdp.core.schedule import PruningSchedule
from pdp_gpt2.report.labels import variant
from pdp_gpt2.report.report import load_run
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.train.resume import check_resume_config

OLD = Path(__file__).parent / "runs_before_method_configs"
RUNS = ("gmp", "pdp", "wanda")


def _config(run: str, **pdp) -> TrainConfig:
    """Today's TrainConfig for the flags the old run was made with (its run_config.json)."""
    rc = json.loads((OLD / run / "run_config.json").read_text())
    return TrainConfig(**{k: v for k, v in rc.items() if k != "pdp"}, pdp=PDPConfig(**{**rc["pdp"], **pdp}))


@pytest.mark.parametrize("run", RUNS)
def test_resume_accepts_the_old_run_config(run):
    check_resume_config(_config(run), OLD / run / "checkpoint-2")
    with pytest.raises(UsageError, match="--sparsity"):  # and still compares what it records
        check_resume_config(_config(run, sparsity=0.25), OLD / run / "checkpoint-2")


@pytest.mark.parametrize("run", ["gmp", "pdp"])
def test_the_old_schedule_plan_resumes(run):
    """A gmp checkpoint's plan carries the flat config's tau schedule (exp, 0.001): a method without
    a temperature adopts it without comparing it; PDP's is compared and equal."""
    cfg = _config(run)
    saved = json.loads((OLD / run / "checkpoint-2" / "pdp_state.json").read_text())
    pruner = attach(tiny_gpt2(), run, cfg.pdp)
    sched = PruningSchedule(pruner, 4, ramp_steps=2, schedule=cfg.schedule, start_step=2)
    sched.load_state_dict(saved)
    assert (sched.steps, pruner.sparsity, sched.ramp_steps) == (2, 0.5, 2)
    assert sched.tau == (pytest.approx(0.05) if run == "pdp" else None)


@pytest.mark.parametrize("run, label", [("gmp", "gmp"), ("pdp", "pdp+tau-exp"), ("wanda", "wanda+tensor")])
def test_the_report_reads_old_summaries(run, label):
    r = load_run(OLD / run)
    assert r.summary["method"] == run and variant(r.summary) == label


@pytest.mark.parametrize("run", RUNS)
def test_an_old_manifest_agrees_with_its_summary(run):
    manifest = read_manifest(OLD / run / "final")
    assert "method_settings" not in manifest  # written before the method's own settings were recorded
    check_description(manifest, json.loads((OLD / run / "summary.json").read_text()), OLD / run / "final")
