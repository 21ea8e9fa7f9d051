"""A method installed as a plugin (an entry point in ``pdp_gpt2.methods``) is listed by ``--method``'s
help when the parser is built, and the subprocesses ``pdp-gpt2 sweep`` starts find it (they inherit the
environment the sweep runs in)."""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys

import pytest
import yaml

from pdp_gpt2.cli import main
from pdp_gpt2.cli import train as train_cli
from pdp_gpt2.pdp.core import registry

from helpers import ROOT, install_dist

# A plugin needs no code of its own to be a method: this one registers the built-in magnitude driver
# under another name (a real plugin names its own MaskDriver subclass).
SPEC_MODULE = '''from pdp_gpt2.pdp.core.registry import MethodSpec
SPEC = MethodSpec("magcopy", "pdp_gpt2.pdp.methods.magnitude.driver:Magnitude", label="magnitude (plugin)",
                  summary="a plugin: one-shot |w|")
'''


def install_plugin(site):
    """What ``pip install`` of a distribution with one entry point in pdp_gpt2.methods leaves on disk."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "magcopy_plugin.py").write_text(SPEC_MODULE)
    info = site / "magcopy_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: magcopy-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\nmagcopy = magcopy_plugin:SPEC\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}


def _method_help() -> str:
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    return next(a.help for a in parser._actions if a.dest == "method")


def test_method_help_lists_the_registry_when_the_parser_is_built():
    text = _method_help()
    for spec in registry.BUILTIN:
        assert f"{spec.name}: {spec.summary}" in text
    registry.register(registry.MethodSpec("late", "x:Y"))
    try:
        assert "late (plugin)" in _method_help()  # registered after import: still listed
    finally:
        registry.unregister("late")


@pytest.mark.slow  # a fresh interpreter
def test_help_in_a_fresh_process_lists_an_installed_plugin_without_importing_it(tmp_path):
    env = install_plugin(tmp_path / "site")
    (tmp_path / "site" / "magcopy_plugin.py").write_text("raise ImportError('broken plugin')\n")
    r = subprocess.run([sys.executable, "-m", "pdp_gpt2", "train", "--help"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "magcopy (plugin)" in " ".join(r.stdout.split())  # named from its entry point, never imported


@pytest.mark.slow  # a sweep whose trial trains in a subprocess
def test_a_sweep_trial_trains_a_plugin_method(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    env = install_plugin(tmp_path / "site")
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(yaml.safe_dump({"program": "main.py", "method": "grid",
                                   "metric": {"name": "perplexity", "goal": "minimize"},
                                   "parameters": {"method": {"value": "magcopy"}, "sparsity": {"value": 0.5}}}))
    out = tmp_path / "sw"
    cmd = [sys.executable, "-m", "pdp_gpt2", "sweep", str(cfg), "--output_dir", str(out), "--max_steps", "2",
           "--set", f"model={model_dir}", "--set", f"dataset={corpus}", "--set", "max_length=32",
           "--set", "batch_size=2"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    with open(out / "sweep.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["ok"], rows
    s = json.loads((out / "trial-000" / "summary.json").read_text())
    assert s["method"] == "magcopy" and s["sparsity_actual"] == 0.5


def test_a_plugin_that_fails_to_import_refuses_its_method_in_one_line_and_no_other(tmp_path, monkeypatch, capsys):
    from pdp_gpt2.train.config import TrainConfig

    monkeypatch.setattr(registry, "_problems", {}, raising=False)
    site = install_dist(tmp_path / "site", "crashplug", f"[{registry.ENTRY_POINT_GROUP}]\ncrash = crashplug_mod:SPEC\n",
                        {"crashplug_mod": "import no_such_module_anywhere\n"})
    monkeypatch.syspath_prepend(str(site))
    assert TrainConfig(method="gmp").method == "gmp"  # another method: not even imported
    out = tmp_path / "run"
    assert main(["train", "--method", "crash", "--model", str(tmp_path / "missing"), "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "crashplug" in err[0] and "'crash'" in err[0], err
    assert "ModuleNotFoundError: No module named 'no_such_module_anywhere'" in err[0]
    assert not out.exists()  # refused before any work
