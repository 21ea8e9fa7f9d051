"""The method registry (pdp/core/registry.py): capabilities, plugins through entry points, no torch."""
import json
import os
import subprocess
import sys

import pytest

from pdp_gpt2.pdp.core import registry
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.core.registry import MethodSpec

from helpers import ROOT, install_dist

PLUGIN = '''
import torch
from pdp_gpt2.pdp.core.hard import HardMask
from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.core.registry import MethodSpec


class EveryOther(MaskDriver):
    """One-shot: prunes the entries of odd flat index (a pattern nobody would choose)."""

    one_shot = True
    keeps_history = True

    def make_mask(self, t):
        return HardMask(t.module.weight.shape, t.out_dim)

    def update(self, t, sparsity):
        keep = torch.ones(self.original(t).numel(), dtype=torch.bool)
        keep[1::2] = False
        self.mask_of(t).keep.copy_(keep.view_as(self.mask_of(t).keep))


SPEC = MethodSpec("everyother", "toyplugin:EveryOther", label="every other", colour="#123456",
                  summary="prunes odd indices")
'''


def _install_plugin(root):
    """A distribution on disk with one entry point in pdp_gpt2.methods (what pip install writes)."""
    (root / "toyplugin.py").write_text(PLUGIN)
    info = root / "toyplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: toyplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{registry.ENTRY_POINT_GROUP}]\neveryother = toyplugin:SPEC\n")
    return root


def test_styling_is_a_hint_checked_at_registration(tmp_path, monkeypatch):
    """A method may bring a label and a colour hint (the report draws them, report/style.py); the
    built-ins bring none: their labels and colours are the report's."""
    assert not any(s.label or s.colour for s in registry.BUILTIN)
    assert MethodSpec("ok", "a:B", label="Ok", colour="#12ab34").colour == "#12ab34"
    assert MethodSpec("named", "a:B", colour="tab:olive").colour == "tab:olive"
    for bad in ({"colour": "#abcde"}, {"colour": 3}, {"colour": "#abcdeg"}, {"label": "two\nlines"}, {"label": 1}):
        with pytest.raises(ValueError, match="method 'x'"):
            MethodSpec("x", "a:B", **bad)
    # a plugin's hint is checked when its entry point loads: refused in one line naming its package
    monkeypatch.setattr(registry, "_problems", {}, raising=False)
    spec = "from pdp_gpt2.pdp.core.registry import MethodSpec\nSPEC = MethodSpec('hue', 'a:B', colour='#ab')\n"
    monkeypatch.syspath_prepend(str(install_dist(tmp_path, "hueplug", GROUP + "hue = hue_mod:SPEC\n", {"hue_mod": spec})))
    with pytest.raises(registry.PluginError, match=r"hueplug 0.1.*ValueError: method 'hue': colour hint '#ab'"):
        registry.get("hue")


def test_builtins_declare_what_callers_ask():
    assert registry.get("wanda").calibration and not registry.get("gmp").calibration
    assert registry.get("pdp").soft and registry.get("pdp").uses_tau and not registry.get("gmp").uses_tau
    assert registry.get("gmp").gradual and not registry.get("magnitude").gradual
    assert not registry.get("dense").prunes and registry.get("pdp").prunes
    with pytest.raises(KeyError):
        registry.get("nope")


@pytest.mark.parametrize("name", [s.name for s in registry.BUILTIN if s.driver is not None])
def test_a_builtin_spec_agrees_with_its_driver(name):
    spec = registry.get(name)
    cls = spec.driver_class()
    assert cls.one_shot == (not spec.gradual)


def test_register_refuses_duplicates_and_builtins_cannot_go():
    spec = registry.register(MethodSpec("toy-dup", None))
    try:
        with pytest.raises(ValueError, match="already registered"):
            registry.register(MethodSpec("toy-dup", None))
        assert "toy-dup" in registry.names()
    finally:
        registry.unregister("toy-dup")
    assert spec.name not in registry.names()
    with pytest.raises(ValueError, match="built-in"):
        registry.unregister("pdp")


def test_importing_the_registry_and_listing_plugins_loads_no_torch(tmp_path):
    _install_plugin(tmp_path)
    code = ("import sys; from pdp_gpt2.pdp.core import registry; names = registry.names(); "
            "print(names[-1], 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["everyother", "False"]


def test_a_plugin_spec_loads_on_first_use(tmp_path, monkeypatch):
    _install_plugin(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert "everyother" in registry.names()
        spec = registry.get("everyother")
        assert spec.label == "every other" and spec.driver_class().__name__ == "EveryOther"
    finally:
        registry.unregister("everyother")
        sys.modules.pop("toyplugin", None)


@pytest.mark.slow
def test_a_plugin_method_trains_through_the_cli_in_a_subprocess(tmp_path, tiny_assets):
    """``pdp-gpt2 train --method everyother`` in a fresh process finds the plugin by its entry point."""
    model_dir, corpus = tiny_assets
    (tmp_path / "site").mkdir()
    plugin = _install_plugin(tmp_path / "site")
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(plugin), str(ROOT / "src")])}
    cmd = [sys.executable, "-m", "pdp_gpt2.cli", "train", "--model", str(model_dir), "--dataset", str(corpus),
           "--output_dir", str(out), "--max_steps", "2", "--batch_size", "2", "--max_length", "32",
           "--progress", "false", "--lr_warmup_steps", "0", "--method", "everyother", "--sparsity", "0.5"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "everyother"
    from safetensors.torch import load_file

    weights = load_file(out / "final" / "model.safetensors")
    for name, layer in summary["layers"].items():
        w = weights[f"{name}.weight"].reshape(-1)
        assert (w[1::2] == 0).all() and layer["zeros"] == w.numel() // 2, name


def test_help_lists_every_method():
    from pdp_gpt2.train import flags

    text = flags.help_of(next(f for f in flags.fields() if f.name == "method"))
    for name in ("pdp", "dense", "magnitude", "gmp", "wanda", "sparsegpt"):
        assert f"{name}:" in text
    assert "\n" not in text  # one line, for --help


@pytest.mark.parametrize("method", ["movement", "sparsegpt"])
def test_a_pattern_the_method_cannot_prune_is_refused_before_any_work(method, tmp_path, capsys):
    from pdp_gpt2.cli import main
    from pdp_gpt2.errors import UsageError
    from pdp_gpt2.train.config import PDPConfig, TrainConfig

    assert registry.get(method).accepts("2:4") and registry.get(method).accepts("unstructured")
    kinds = {"movement": "unstructured, N:M, neurons, heads", "sparsegpt": "unstructured, N:M"}[method]
    with pytest.raises(UsageError, match=f"method {method} prunes only {kinds} patterns, not 'row'"):
        TrainConfig(method=method, pdp=PDPConfig(pattern="row"))
    out = tmp_path / "run"  # the CLI: one line, exit 2, nothing written (no model is even looked for)
    assert main(["train", "--method", method, "--pattern", "row", "--model", str(tmp_path / "missing"),
                 "--output_dir", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"prunes only {kinds} patterns, not 'row'" in err[0]
    assert not out.exists()
    assert registry.get("pdp").accepts("row") and registry.get("gmp").accepts("3:8")


# ---- plugins that cannot be used: one line naming the package, the other methods unharmed ------------

GROUP = f"[{registry.ENTRY_POINT_GROUP}]\n"


def _spec_module(name: str) -> str:
    return f"from pdp_gpt2.pdp.core.registry import MethodSpec\nSPEC = MethodSpec({name!r}, 'pdp_gpt2.pdp.methods.gmp.driver:GMP')\n"


@pytest.fixture
def own_registry(monkeypatch):
    """This test's plugins and warnings stay in this test."""
    monkeypatch.setattr(registry, "_specs", dict(registry._specs))
    monkeypatch.setattr(registry, "_plugins_loaded", set())
    monkeypatch.setattr(registry, "_problems", {}, raising=False)
    monkeypatch.setattr(registry, "_warned", set(), raising=False)


def test_a_plugin_that_raises_at_import_is_one_line_naming_its_package(tmp_path, monkeypatch, capsys, own_registry):
    site = install_dist(tmp_path, "brokenplug", GROUP + "broken = brokenplug_mod:SPEC\nfine = fineplug_mod:SPEC\n",
                        {"brokenplug_mod": "raise RuntimeError('boom at import')\n",
                         "fineplug_mod": _spec_module("fine")})
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "fineplug_mod", raising=False)
    assert {"broken", "fine", "pdp"} <= set(registry.names())  # listed without importing anything
    for _ in range(2):  # the failure is kept: asked again, the same line
        with pytest.raises(UsageError) as e:
            registry.get("broken")
        msg = str(e.value)
        assert "\n" not in msg and "brokenplug" in msg and "broken = brokenplug_mod:SPEC" in msg, msg
        assert "RuntimeError: boom at import" in msg, msg
    assert registry.get("fine").name == "fine" and registry.get("gmp").gradual  # the others keep working
    assert capsys.readouterr().err == ""  # a failed get() is the caller's error to report, not a print
    assert [s.name for s in registry.all_specs()][-1] == "fine"  # the broken one left out ...
    registry.all_specs()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "warning" in err[0] and "'broken'" in err[0] and "brokenplug" in err[0], err  # ... once


def test_a_plugin_named_like_a_builtin_is_ignored_with_one_warning(tmp_path, monkeypatch, capsys, own_registry):
    site = install_dist(tmp_path, "shadowplug", GROUP + "pdp = shadow_mod:SPEC\n",
                        {"shadow_mod": "raise RuntimeError('never imported')\n"})
    monkeypatch.syspath_prepend(str(site))
    assert registry.names().count("pdp") == 1
    registry.names()
    assert registry.get("pdp") is registry.BUILTIN[0]  # the built-in, whatever the plugin says
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "'pdp'" in err[0] and "shadowplug" in err[0] and "built-in" in err[0], err


def test_a_plugin_whose_spec_is_named_otherwise_is_refused_in_one_line(tmp_path, monkeypatch, own_registry):
    site = install_dist(tmp_path, "misnamed", GROUP + "alias = misnamed_mod:SPEC\nfine2 = fine2_mod:SPEC\n",
                        {"misnamed_mod": _spec_module("other"), "fine2_mod": _spec_module("fine2")})
    monkeypatch.syspath_prepend(str(site))
    for mod in ("misnamed_mod", "fine2_mod"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    with pytest.raises(UsageError) as e:
        registry.get("alias")
    msg = str(e.value)
    assert "\n" not in msg and "'alias'" in msg and "'other'" in msg and "misnamed" in msg, msg
    assert "other" not in registry.names() and registry.get("fine2").name == "fine2"
    assert "alias" not in [s.name for s in registry.all_specs()]
