"""The report asks the method registry, never a method's name: labels, colours, which extensions a
label names, which runs are the dense reference and which are baselines: built-ins, a plugin, a method
not installed where the report runs, and distilled runs."""
from __future__ import annotations

import json

import pytest

from pdp_gpt2.pdp.core import registry
from pdp_gpt2.report import findings, methods, style
from pdp_gpt2.report.report import collect, variant
from pdp_gpt2.report.stats import dense_mean

from helpers import install_dist


@pytest.fixture
def plugin():
    """A plugin method registered in this process, the way an entry point would add it."""
    specs = [registry.register(registry.MethodSpec("random", "x:RandomMask", label="Random", colour="#123456")),
             registry.register(registry.MethodSpec("softplug", "x:Soft", soft=True, uses_tau=True))]
    yield specs
    for s in specs:
        registry.unregister(s.name)


def _run(root, name, method, target, ppl, **config):
    d = root / name
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({
        "method": method, "sparsity_target": target, "sparsity_actual": target, "perplexity": ppl,
        "perplexity_dense": 125.0, "tau": 0.02, "config": {"seed": 0, "pdp": {"tau": 0.02}, **config}}))
    return d


def test_builtin_labels_and_colours_are_the_reports():
    for spec in registry.BUILTIN:  # the core declares none; every built-in has its own colour here
        assert style.color(spec.name) == style.METHOD_COLORS[spec.name], spec.name
        assert methods.title(spec.name) == methods.LABELS.get(spec.name, spec.name)
    assert len(set(style.METHOD_COLORS.values())) == len(style.METHOD_COLORS)
    # today's look, unchanged: the five colours, the titles' names, the extensions' colours
    assert [style.color(m) for m in ("dense", "pdp", "gmp", "magnitude", "wanda")] == \
        ["#333333", "#2ca02c", "#ff7f0e", "#1f77b4", "#9467bd"]
    assert [methods.title(m) for m in ("pdp", "gmp", "wanda", "magnitude")] == ["PDP", "GMP", "Wanda", "magnitude"]
    assert (style.color("pdp+improved"), style.color("pdp+q8@tau=0.05"), style.color("pdp+tau-exp")) == \
        ("#17becf", "#bcbd22", style.ANNEALED_COLOR)
    assert style.color("gmp+q8") in style.SPARE  # an extension colour is the shipped method's only
    assert style.DENSE_LINE["color"] == style.color("dense") == "#333333"


def test_a_plugin_is_labelled_coloured_and_compared_as_a_baseline(tmp_path, plugin):
    _run(tmp_path, "p", "pdp", 0.9, 130.0)
    _run(tmp_path, "r", "random", 0.9, 120.0)
    _run(tmp_path, "d", "dense", 0.0, 100.0)
    runs, _ = collect([tmp_path])
    assert style.color("random") == "#123456" and style.color("softplug") in style.SPARE
    assert methods.is_baseline("random") and not methods.is_baseline("pdp") and not methods.is_baseline("dense")
    f = findings.pdp_vs_best(runs)
    assert f["title"] == "PDP is 8.3% above Random at 90%"
    assert "random beats pdp at 90%: pdp is +8.33%" in findings.losses(runs, {})["lines"]
    assert dense_mean(runs) == 100.0


def test_which_extensions_a_label_names_is_the_methods_capability(plugin):
    extended = {"pdp": {"tau": 0.02, "improved_masking": True, "tau_schedule": "exp"}, "custom_optimizer": True}
    assert variant({"method": "pdp", "config": extended}) == "pdp+improved+maskopt+tau-exp"
    assert variant({"method": "softplug", "config": extended}) == "softplug+improved+maskopt+tau-exp"
    assert variant({"method": "random", "config": extended}) == "random"  # hard, no tau: none of them apply
    assert variant({"method": "gmp", "config": extended}) == "gmp"


def test_a_methods_own_option_names_its_run_when_changed():
    tensor = {"pdp": {"wanda_groups": "tensor"}}
    assert variant({"method": "wanda", "config": tensor}) == "wanda+tensor"
    assert variant({"method": "wanda", "config": {"pdp": {"wanda_groups": "output"}}}) == "wanda"  # the default
    assert variant({"method": "wanda", "config": {"pdp": {}}}) == "wanda"  # a summary from before the option


def test_distilled_runs_are_marked_and_not_the_dense_reference(tmp_path):
    assert variant({"method": "gmp", "config": {"distill": 0.5}}) == "gmp+distill"
    assert variant({"method": "pdp", "config": {"distill": 0.5, "pdp": {"improved_masking": True}}}) == \
        "pdp+improved+distill"
    assert variant({"method": "dense", "config": {"distill": 0.5}}) == "dense+distill"
    assert variant({"method": "gmp", "config": {"distill": 0.0}}) == "gmp"
    _run(tmp_path, "d", "dense", 0.0, 100.0)
    _run(tmp_path, "dd", "dense", 0.0, 90.0, distill=0.5)
    _run(tmp_path, "g", "gmp", 0.9, 130.0, distill=0.5)
    runs, _ = collect([tmp_path])
    assert sorted(r.label for r in runs) == ["dense", "dense+distill", "gmp+distill"]
    assert dense_mean(runs) == 100.0  # the reference is plain fine-tuning


def test_a_method_not_installed_here_is_a_pruning_method_with_a_spare_colour(tmp_path):
    _run(tmp_path, "x", "not-installed-here", 0.9, 140.0)
    (run,), _ = collect([tmp_path])
    assert run.prunes and run.label == "not-installed-here" and not run.spec.uses_tau
    assert style.color(run.label) in style.SPARE and methods.title(run.label) == "not-installed-here"
    assert methods.is_baseline(run.method)


def test_a_distilled_run_pairs_with_its_method_and_a_schedule_hides_no_extension():
    # benchmark v3's labels: before, every PDP line (shipped, distilled, three extensions) was pink
    assert style.color("gmp+distill") == style.color("gmp") and style.color("movement+distill") == \
        style.color("movement")
    assert style.color("pdp+tau-exp+distill") == style.color("pdp+tau-exp") == style.ANNEALED_COLOR
    assert (style.linestyle("gmp+distill"), style.marker("gmp+distill")) == ("-.", "^")
    assert (style.linestyle("gmp"), style.marker("gmp")) == ("-", "o")
    assert [style.color(f"pdp+{e}+tau-exp") for e in ("improved", "q8", "maskopt")] == \
        [style.EXTENSION_COLORS[e] for e in ("improved", "q8", "maskopt")]
    labels = ["pdp+tau-exp", "pdp+tau-exp+distill", "pdp+improved+tau-exp", "pdp+q8+tau-exp", "pdp+maskopt+tau-exp"]
    assert len({(style.color(x), style.linestyle(x)) for x in labels}) == len(labels)  # five lines, five looks


def _report(tmp_path, capsys):
    """`pdp-gpt2 report` of every run under tmp_path/runs: (exit status, report.md, stderr lines)."""
    from pdp_gpt2.cli import main

    capsys.readouterr()
    rc = main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")])
    md = tmp_path / "rep" / "report.md"
    return rc, md.read_text() if md.is_file() else "", capsys.readouterr().err.strip().splitlines()


def test_a_run_of_a_plugin_that_fails_to_load_is_reported_with_one_warning(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(registry, "_problems", {}, raising=False)
    site = install_dist(tmp_path / "site", "boomplug", f"[{registry.ENTRY_POINT_GROUP}]\nboom = boomplug_mod:SPEC\n",
                        {"boomplug_mod": "raise RuntimeError('boom at import')\n"})
    monkeypatch.syspath_prepend(str(site))
    _run(tmp_path / "runs", "b", "boom", 0.9, 140.0)
    _run(tmp_path / "runs", "p", "pdp", 0.9, 130.0)
    rc, md, err = _report(tmp_path, capsys)
    assert rc == 0 and "| b | boom |" in md and "| p | pdp |" in md  # read as a method named by itself
    assert len(err) == 1 and "boomplug" in err[0] and "RuntimeError: boom at import" in err[0], err


def test_a_colour_matplotlib_cannot_draw_is_replaced_by_a_spare_one_with_one_warning(tmp_path, capsys):
    registry.register(registry.MethodSpec("badcolour", "x:Y", colour="notacolour"))
    try:
        _run(tmp_path / "runs", "x", "badcolour", 0.9, 140.0)
        _run(tmp_path / "runs", "d", "dense", 0.0, 100.0)
        rc, md, err = _report(tmp_path, capsys)
        assert style.color("badcolour") in style.SPARE and capsys.readouterr().err == ""  # warned once only
    finally:
        registry.unregister("badcolour")
    assert rc == 0 and "| x | badcolour |" in md and (tmp_path / "rep" / "ppl_vs_sparsity.png").stat().st_size > 5000
    assert len(err) == 1 and "'badcolour'" in err[0] and "'notacolour'" in err[0], err


def test_a_method_registered_after_the_report_first_asked_is_seen():
    """The report reads the registry as it is now: a name it once found unknown is not remembered as such."""
    assert methods.spec("latecomer").uses_tau is False and style.color("latecomer") in style.SPARE
    registry.register(registry.MethodSpec("latecomer", "x:Y", uses_tau=True, label="Late", colour="#abcdef"))
    try:
        assert methods.spec("latecomer").uses_tau and methods.title("latecomer") == "Late"
        assert style.color("latecomer") == "#abcdef"
    finally:
        registry.unregister("latecomer")
    assert methods.title("latecomer") == "latecomer"  # and gone again once unregistered
