"""Local sweeps: the shipped sweep file, grid/random planning, failure isolation, sweep.csv."""
import argparse
import csv
import json
import os
import random
import re
from pathlib import Path

import pytest
import yaml

from pdp_gpt2.cli import train as cli_train

from pdp_gpt2.train import sweep, sweep_dir, sweep_spec
from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError

from helpers import NEEDS_JSONSCHEMA, ROOT, TESTS


def _train_parser():
    p = argparse.ArgumentParser()
    cli_train.add_arguments(p)
    return p


def test_shipped_sweep_config_is_wandb_format_and_names_only_train_flags():
    raw = yaml.safe_load((ROOT / "sweep_config.yaml").read_text())
    assert raw["program"] == "main.py" and (ROOT / raw["program"]).is_file()
    assert raw["method"] in ("grid", "random", "bayes")
    assert raw["metric"] == {"name": "perplexity", "goal": "minimize"}
    flags = {s for a in _train_parser()._actions for s in a.option_strings}
    for name in raw["parameters"]:
        assert f"--{name}" in flags, name
    for name in ("sparsity", "tau", "warmup_epochs", "learning_rate", "improved_masking", "beta", "quantize",
                 "bits", "custom_optimizer", "method"):
        assert name in raw["parameters"], name
    # Every draw is a valid train command line, parsed as wandb agent passes it (--name=value).
    spec = sweep_spec.load_spec(ROOT / "sweep_config.yaml")
    for params in sweep_spec.plan_trials(spec, count=25, seed=1):
        cfg = cli_train.config_from_args(_train_parser().parse_args(sweep.trial_argv(params)))
        assert cfg.method == params["method"] and cfg.pdp.sparsity == params["sparsity"]
        assert cfg.pdp.improved_masking is params["improved_masking"]
        assert 0.005 <= cfg.pdp.tau <= 0.2 and 1e-4 <= cfg.learning_rate <= 2e-3


SCHEMA_DIR = TESTS / "wandb_sweep_schema"


def _wandb_schema_errors(config: dict) -> list[str]:
    """Validate like W&B's sweep controller: its JSON schema (draft 7) with its two format checks."""
    import jsonschema

    schema = json.loads((SCHEMA_DIR / "schema.json").read_text())
    formats = jsonschema.FormatChecker()
    formats.checks("float")(lambda v: isinstance(v, float))
    formats.checks("integer")(lambda v: isinstance(v, int))
    return [e.message for e in jsonschema.Draft7Validator(schema, format_checker=formats).iter_errors(config)]


@NEEDS_JSONSCHEMA
def test_shipped_sweep_config_validates_against_wandb_sweep_schema():
    config = yaml.safe_load((ROOT / "sweep_config.yaml").read_text())
    assert _wandb_schema_errors(config) == []
    broken = {**config, "method": "hyperband", "metric": {"name": "perplexity", "goal": "lowest"}}
    errors = _wandb_schema_errors(broken)
    assert any("'hyperband' is not one of" in e for e in errors) and any("'lowest'" in e for e in errors)


# Malformed sweep files: W&B's schema rejects each, and so does `pdp-gpt2 sweep`,
# with one line that names the parameter.
BAD_SWEEPS = [
    ({"metric": "perplexity"}, "metric must be a mapping"),
    ({"parameters": {"sparsity": {"values": 5}}}, "parameter sparsity: 'values' must be a non-empty list"),
    ({"parameters": {"tau": {"distribution": "uniform"}}}, "parameter tau: distribution uniform needs numbers"),
    ({"parameters": {"tau": {"distribution": "log_uniform_values", "min": 0, "max": 0.1}}},
     "parameter tau: log_uniform_values .* 'min' must be > 0"),
    ({"parameters": {"quantize": {"values": [True, False], "probabilities": [0.5, 0.6]}}},
     "parameter quantize: 'probabilities' must sum to 1"),
]


@pytest.mark.parametrize("change, message", BAD_SWEEPS)
def test_bad_sweep_yaml_is_one_line_naming_the_parameter(tmp_path, capsys, change, message):
    config = yaml.safe_load((ROOT / "sweep_config.yaml").read_text())
    config = {**config, **change, "parameters": {**config["parameters"], **change.get("parameters", {})}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["sweep", str(path), "--output_dir", str(tmp_path / "out"), "--dry_run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert re.search(message, err), err


@NEEDS_JSONSCHEMA
@pytest.mark.parametrize("change, message", [b for b in BAD_SWEEPS if "probabilities" not in b[1]])
def test_wandb_schema_rejects_the_bad_sweeps_too(change, message):
    """The 0.3.0 schema does not check that probabilities sum to 1 (left out)."""
    config = yaml.safe_load((ROOT / "sweep_config.yaml").read_text())
    config = {**config, **change, "parameters": {**config["parameters"], **change.get("parameters", {})}}
    assert _wandb_schema_errors(config)


def _agent_command(sweep_file: dict, params: dict) -> list[str]:
    """The command line `wandb agent` runs for one drawn configuration: its own argument builder
    (create_sweep_command_args) and the macro expansion of wandb_agent.Agent._command_run."""
    try:
        from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    except ImportError:  # wandb is optional: the same rule, copied (--name=value, str() of the value)
        def create_sweep_command_args(command):
            return {"args": [f"--{k}={v['value']}" for k, v in command["args"].items()]}
    sweep_vars = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars.update(interpreter=["python"], program=[sweep_file["program"]], env=["/usr/bin/env"])
    out = []
    for c in map(str, sweep_file["command"]):
        out += sweep_vars.get(c[2:-1]) or [] if c.startswith("${") and c.endswith("}") else [c]
    return out


def test_wandb_agent_argv_parses_to_the_drawn_train_config():
    from pdp_gpt2.cli.main import build_parser

    sweep_file = yaml.safe_load((ROOT / "sweep_config.yaml").read_text())
    spec = sweep_spec.load_spec(ROOT / "sweep_config.yaml")
    # a controller draws full-precision floats; both booleans must appear
    hand = {**sweep_spec.plan_trials(spec, 1, seed=0)[0], "tau": 0.012345678901234567, "learning_rate": 0.00031415926535,
            "improved_masking": True, "quantize": False, "custom_optimizer": True}
    draws = [hand, *sweep_spec.plan_trials(spec, count=12, seed=3)]
    assert {d["quantize"] for d in draws} == {True, False}
    for params in draws:
        cmd = _agent_command(sweep_file, params)
        assert cmd[:3] == ["/usr/bin/env", "python", "main.py"]
        argv = cmd[3:]
        assert f"--improved_masking={params['improved_masking']}" in argv  # booleans as True / False
        cfg = cli_train.config_from_args(build_parser().parse_args(["train", *argv]))  # what main.py does
        for name, value in params.items():
            got = getattr(cfg.pdp, name) if hasattr(cfg.pdp, name) else getattr(cfg, name)
            assert got == value and type(got) is type(value), (name, got, value)


def test_grid_expands_every_combination_last_parameter_fastest():
    trials = sweep_spec.grid_trials({"a": {"values": [1, 2]}, "b": {"values": ["x", "y"]}, "c": {"value": 0}})
    assert trials == [{"a": 1, "b": "x", "c": 0}, {"a": 1, "b": "y", "c": 0},
                      {"a": 2, "b": "x", "c": 0}, {"a": 2, "b": "y", "c": 0}]


def test_random_draws_are_seeded_and_inside_their_ranges():
    spec = sweep_spec.parse_spec({"method": "random", "parameters": {
        "tau": {"distribution": "log_uniform_values", "min": 0.01, "max": 0.1},
        "seed": {"min": 1, "max": 3}, "method": {"values": ["pdp", "gmp"]},
        "learning_rate": {"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0.25}}})
    a, b = sweep_spec.plan_trials(spec, 30, seed=7), sweep_spec.plan_trials(spec, 30, seed=7)
    assert a == b and len(a) == 30
    assert all(0.01 <= t["tau"] <= 0.1 for t in a)
    assert {t["seed"] for t in a} == {1, 2, 3}  # min/max integers: int_uniform, both ends included
    assert {t["method"] for t in a} == {"pdp", "gmp"}
    assert {t["learning_rate"] for t in a} <= {0.0, 0.25, 0.5, 0.75, 1.0}
    assert sweep_spec.plan_trials(spec, 30, seed=8) != a


def test_sample_log_uniform_is_uniform_in_log_space():
    rng = random.Random(0)
    xs = [sweep_spec.sample({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}, rng) for _ in range(2000)]
    below = sum(x < 1e-3 for x in xs) / len(xs)  # 1e-3 is the geometric midpoint
    assert 0.45 < below < 0.55


def test_bayes_falls_back_to_random_with_a_note(capsys):
    spec = sweep_spec.parse_spec({"method": "bayes", "parameters": {"tau": {"min": 0.01, "max": 0.1}}})
    assert len(sweep_spec.plan_trials(spec, 3)) == 3
    assert "bayes" in capsys.readouterr().err


@pytest.mark.parametrize("raw, needle", [
    ({"method": "grid", "parameters": {"sparsity": {"values": [0.5]}, "nope": {"value": 1}}}, "nope"),
    ({"method": "grid", "parameters": {"tau": {"distribution": "uniform", "min": 0.0, "max": 1.0}}}, "grid"),
    ({"method": "hyperband", "parameters": {"tau": {"value": 0.1}}}, "method"),
    ({"method": "random", "parameters": {}}, "parameters"),
])
def test_bad_sweep_files_are_one_line_usage_errors(raw, needle):
    with pytest.raises(UsageError, match=needle):
        sweep_spec.parse_spec(raw)


def _fake_runner(calls):
    """Trial 0 crashes (the runner raises), later trials 'finish' with a summary.json."""
    def runner(params, tdir, timeout):
        calls.append(tdir.name)
        if tdir.name == "trial-000":
            raise RuntimeError("boom")
        (tdir / "summary.json").write_text(json.dumps({"perplexity": 10.0 * params["sparsity"],
                                                        "sparsity_actual": params["sparsity"]}))
        return {"status": "ok", "returncode": 0, "error": ""}
    return runner


def test_a_failed_trial_is_recorded_and_the_sweep_goes_on_then_reruns_only_what_is_missing(tmp_path):
    spec = sweep_spec.parse_spec({"method": "grid", "parameters": {"sparsity": {"values": [0.5, 0.75, 0.9]}}})
    calls = []
    rows = sweep.run_sweep(spec, tmp_path, overrides={"max_steps": 3}, runner=_fake_runner(calls))
    assert [r["status"] for r in rows] == ["failed", "ok", "ok"]
    with open(tmp_path / "sweep.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["trial"] for r in table] == ["trial-000", "trial-001", "trial-002"]
    assert table[0]["error"] == "RuntimeError: boom" and table[0]["perplexity"] == ""
    assert float(table[2]["perplexity"]) == pytest.approx(9.0) and table[2]["max_steps"] == "3"
    assert json.loads((tmp_path / "trial-001" / "params.json").read_text()) == {
        "sparsity": 0.75, "use_wandb": False, "max_steps": 3}
    assert sweep.best(rows, "perplexity", "minimize")["trial"] == "trial-001"
    calls.clear()
    rows = sweep.run_sweep(spec, tmp_path, overrides={"max_steps": 3}, runner=_fake_runner(calls))
    assert calls == ["trial-000"] and [r["cached"] for r in rows] == [False, True, True]


def test_trial_runs_into_a_clean_directory_and_overwrites_only_an_earlier_run(tmp_path, monkeypatch):
    """`pdp-gpt2 train` refuses a directory with files it did not write, so the sweep's own files
    are written after the run, and --overwrite_output_dir is passed only over an earlier run."""
    cmds = []

    def fake_run(cmd, stdout, stderr, timeout):
        cmds.append(cmd)
        out = Path(next(c for c in cmd if c.startswith("--output_dir=")).split("=", 1)[1])
        assert [p.name for p in out.iterdir()] == ([] if len(cmds) == 1 else ["run_config.json"])
        stdout.write("pdp-gpt2 train: error: boom\n")
        return argparse.Namespace(returncode=2)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    spec = sweep_spec.parse_spec({"method": "grid", "parameters": {"sparsity": {"value": 0.5}}})
    rows = sweep.run_sweep(spec, tmp_path)
    assert "--overwrite_output_dir=True" not in cmds[0] and rows[0]["error"] == "pdp-gpt2 train: error: boom"
    tdir = tmp_path / "trial-000"
    assert sorted(p.name for p in tdir.iterdir()) == ["params.json", "train.log", "trial.json"]
    assert (tdir / "train.log").read_text().endswith("boom\n") and not list(tmp_path.glob(".*.log"))
    (tdir / "run_config.json").write_text("{}")  # an earlier run of ours was killed here
    sweep.run_sweep(spec, tmp_path)
    assert "--overwrite_output_dir=True" in cmds[1]


@pytest.mark.slow
def test_local_sweep_cli_end_to_end_with_a_failing_trial(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"program": "main.py", "method": "grid",
                                   "metric": {"name": "perplexity", "goal": "minimize"},
                                   "parameters": {"tau": {"values": [-1.0, 0.02]}, "method": {"value": "gmp"},
                                                  "sparsity": {"value": 0.5}}}))
    out = tmp_path / "sw"
    rc = main(["sweep", str(cfg), "--output_dir", str(out), "--max_steps", "3", "--set", f"model={model_dir}",
               "--set", f"dataset={corpus}", "--set", "max_length=32", "--set", "batch_size=4"])
    assert rc == 0
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["status"] for r in rows] == ["failed", "ok"]
    assert "tau must be > 0" in rows[0]["error"] and rows[0]["returncode"] == "2"
    s = json.loads((out / "trial-001" / "summary.json").read_text())
    assert float(rows[1]["perplexity"]) == pytest.approx(s["perplexity"]) and s["sparsity_actual"] == 0.5
    assert (out / "trial-001" / "final").is_dir() and (out / "trial-000" / "train.log").is_file()


# ---- a second sweep into the same directory -------------------------------------------------------

def _grid_file(tmp_path, name, **values):
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"program": "main.py", "method": "grid",
                                    "parameters": {k: {"values": v} for k, v in values.items()}}))
    return path


@pytest.fixture
def no_training(monkeypatch):
    """A trial that starts fails at once (no train subprocess): these sweeps must refuse before any."""
    def refuse(*a, **k):
        raise AssertionError("a trial was started")

    monkeypatch.setattr(sweep.subprocess, "run", refuse)


def _finished_trial(tdir, params, perplexity=5.0):
    tdir.mkdir(parents=True)
    (tdir / "params.json").write_text(json.dumps(params))
    (tdir / "summary.json").write_text(json.dumps({"perplexity": perplexity, "sparsity_actual": params["sparsity"]}))


def test_a_sweep_with_other_flags_refuses_a_finished_trial_before_any_trial_runs(tmp_path, capsys, no_training):
    """The first sweep's finished trial-000 (sparsity 0.5) is neither rerun nor deleted by a second
    sweep whose trial-000 is sparsity 0.9: one line, exit 2, every file as it was."""
    out = tmp_path / "sw"
    _finished_trial(out / "trial-000", {"sparsity": 0.5, "use_wandb": False})
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    config = _grid_file(tmp_path, "second.yaml", sparsity=[0.9, 0.95])
    assert main(["sweep", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "trial-000" in err and "sparsity" in err and "finished" in err, err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing written, nothing removed


def test_a_finished_trial_without_params_is_refused_and_a_killed_one_is_still_rerun(tmp_path):
    spec = sweep_spec.parse_spec({"method": "grid", "parameters": {"sparsity": {"values": [0.5, 0.75]}}})
    calls = []
    (tmp_path / "trial-000").mkdir()
    (tmp_path / "trial-000" / "summary.json").write_text("{}")  # finished, but whose flags?
    with pytest.raises(UsageError, match="trial-000.*finished.*cannot be checked"):
        sweep.run_sweep(spec, tmp_path, runner=_fake_runner(calls))
    assert calls == [] and not (tmp_path / "sweep.csv").exists()
    (tmp_path / "trial-000" / "summary.json").unlink()
    (tmp_path / "trial-000" / "run_config.json").write_text("{}")  # a killed run: redone
    _finished_trial(tmp_path / "trial-001", {"sparsity": 0.75, "use_wandb": False})  # the same flags: reused
    rows = sweep.run_sweep(spec, tmp_path, runner=_fake_runner(calls))
    assert calls == ["trial-000"] and [r["cached"] for r in rows] == [False, True]


def test_run_trial_never_overwrites_a_finished_run(tmp_path, monkeypatch):
    """Even called directly, a trial directory holding summary.json gets no --overwrite_output_dir
    (train then refuses it, and the trial is recorded as failed with nothing deleted)."""
    cmds = []

    def fake_run(cmd, stdout, stderr, timeout):
        cmds.append(cmd)
        return argparse.Namespace(returncode=2)

    monkeypatch.setattr(sweep.subprocess, "run", fake_run)
    tdir = tmp_path / "trial-000"
    _finished_trial(tdir, {"sparsity": 0.5})
    assert sweep.run_trial({"sparsity": 0.9}, tdir)["status"] == "failed"
    assert "--overwrite_output_dir=True" not in cmds[0] and (tdir / "summary.json").is_file()


# ---- sweep.csv -----------------------------------------------------------------------------------

def test_the_users_own_sweep_csv_is_refused_and_the_sweeps_own_is_rewritten(tmp_path, capsys, no_training):
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep.csv").write_text("name,score\nmine,1\n")
    config = _grid_file(tmp_path, "s.yaml", sparsity=[0.5])
    assert main(["sweep", str(config), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sweep.csv" in err and "not one a sweep wrote" in err, err
    assert (out / "sweep.csv").read_text() == "name,score\nmine,1\n" and sorted(os.listdir(out)) == ["sweep.csv"]
    # the table a sweep wrote is recognised by its columns, and rewritten by the next sweep
    spec = sweep_spec.parse_spec({"method": "grid", "parameters": {"sparsity": {"values": [0.5]}}})
    (out / "sweep.csv").unlink()

    def runner(params, tdir, timeout):
        (tdir / "summary.json").write_text('{"perplexity": 3.0}')
        return {"status": "ok", "returncode": 0, "error": ""}

    sweep.run_sweep(spec, out, runner=runner)
    assert sweep_dir.is_sweep_csv(out / "sweep.csv")
    sweep.run_sweep(spec, out, runner=runner)
    with open(out / "sweep.csv") as f:
        assert [r["cached"] for r in csv.DictReader(f)] == ["True"]


def test_the_users_own_sweep_config_copy_is_not_replaced(tmp_path, capsys, no_training):
    """`--output_dir .` in a directory holding another sweep file of that name."""
    out = tmp_path / "sw"
    out.mkdir()
    (out / "sweep_config.yaml").write_text("# my own\n")
    config = _grid_file(tmp_path, "s.yaml", sparsity=[0.5])
    assert main(["sweep", str(config), "--output_dir", str(out)]) == 2
    assert "sweep_config.yaml" in capsys.readouterr().err
    assert (out / "sweep_config.yaml").read_text() == "# my own\n" and sorted(os.listdir(out)) == ["sweep_config.yaml"]


# ---- --dry_run checks every value as train would ------------------------------------------------------

@pytest.mark.parametrize("values, message", [
    ({"sparsity": [0.5, 1.5]}, r"trial-001: sparsity must be in \[0, 1\), got 1.5"),
    ({"sparsity": [0.5], "tau": ["abc"]}, r"trial-000: argument --tau: invalid float value: 'abc'"),
    ({"method": ["pdp", "nosuch"]}, r"trial-001: method must be one of"),
])
def test_dry_run_checks_every_trials_values_as_train_does(tmp_path, capsys, values, message):
    config = _grid_file(tmp_path, "s.yaml", **values)
    assert main(["sweep", str(config), "--output_dir", str(tmp_path / "out"), "--dry_run"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and re.search(message, captured.err), captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_dry_run_checks_set_overrides_and_lists_good_trials(tmp_path, capsys):
    config = _grid_file(tmp_path, "s.yaml", sparsity=[0.5, 0.75])
    assert main(["sweep", str(config), "--output_dir", str(tmp_path / "out"), "--dry_run",
                 "--set", "batch_size=0"]) == 2
    assert "trial-000: batch_size must be > 0, got 0" in capsys.readouterr().err
    assert main(["sweep", str(config), "--output_dir", str(tmp_path / "out"), "--dry_run"]) == 0
    assert capsys.readouterr().out.splitlines() == ["trial-000 --sparsity=0.5 --use_wandb=False",
                                                    "trial-001 --sparsity=0.75 --use_wandb=False"]
