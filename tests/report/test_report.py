"""`pdp-gpt2 report`: every PNG is a real image, the HTML embeds them, missing data is a note."""
import base64
import contextlib
import csv
import io
import json
import re

import pytest

from pdp_gpt2.report import plots
from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.report.report import collect, runs_table, variant, write_report

PNG = b"\x89PNG\r\n\x1a\n"
LAYERS = [f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")]


def _run(root, name, method, sparsity, ppl, *, tau=0.02, improved=False, hist=True, steps=20):
    """A run directory shaped like train.run's output (summary.json, metrics.jsonl, mask_hist.json)."""
    d = root / name
    d.mkdir(parents=True)
    target = 0.0 if method == "dense" else sparsity
    summary = {
        "method": method, "eval_split": "test", "sparsity_target": target, "sparsity_actual": target,
        "perplexity": ppl, "perplexity_dense": 30.0, "perplexity_soft": None if method == "dense" else ppl * 0.99,
        "soft_hard_gap": None if method == "dense" else 1 / 0.99 - 1, "tau": tau, "train_steps": steps,
        "train_seconds": 12.5, "layers": {n: {"zeros": int(target * 100), "numel": 100, "sparsity": target}
                                          for n in LAYERS},
        "config": {"custom_optimizer": False, "pdp": {"tau": tau, "improved_masking": improved, "quantize": False,
                                                      "bits": 8, "pattern": "unstructured", "allocation": "layer"}},
    }
    (d / "summary.json").write_text(json.dumps(summary))
    lines = [{"step": s, "loss": 4.0 - s / 20, **({} if method == "dense" else {
        "sparsity_target": target * min(1, s / 10), "sparsity_hard": target * min(1, s / 10)})}
        for s in range(2, steps + 1, 2)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if hist and method != "dense":
        moments = []
        for step, frac_pruned in ((0, 0.0), (10, target * 0.8), (20, target)):
            counts = [0] * 50
            counts[0], counts[-1], counts[25] = int(frac_pruned * 900), int((1 - frac_pruned) * 900), 100
            moments.append({"step": step, "max_steps": steps, "counts": counts, "n": 1000,
                            "edges": [i / 50 for i in range(51)], "below_half": frac_pruned, "band": 0.1})
        (d / "mask_hist.json").write_text(json.dumps({"bins": 50, "moments": moments}))
    return d


def _sweep(root):
    """Eight finished trials (dense, gmp, pdp at two sparsities, a tau and the improved variant) and a failed one."""
    specs = [("dense", 0.0, 25.0, {}), ("gmp", 0.5, 27.0, {}), ("gmp", 0.9, 80.0, {}),
             ("pdp", 0.5, 26.0, {}), ("pdp", 0.9, 61.0, {}), ("pdp", 0.9, 65.5, {"tau": 0.05}),
             ("pdp", 0.5, 26.5, {"improved": True}), ("pdp", 0.9, 58.25, {"improved": True})]
    for i, (method, s, ppl, kw) in enumerate(specs):
        _run(root, f"trial-{i:03d}", method, s, ppl, **kw)
    with open(root / "sweep.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["trial", "status", "returncode", "error"])
        w.writeheader()
        w.writerow({"trial": "trial-008", "status": "failed", "returncode": "2", "error": "tau must be > 0"})
    return root


@pytest.fixture
def sweep_dir(tmp_path):
    return _sweep(tmp_path / "sweep")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """`pdp-gpt2 report` once on the sweep plus a run whose summary.json a kill cut short:
    (exit status, its stderr, the damaged file, the report directory).  Rendering every plot takes
    seconds, so the tests below read this one report."""
    root = tmp_path_factory.mktemp("rendered")
    sweep = _sweep(root / "sweep")
    damaged = _run(sweep, "trial-009", "pdp", 0.9, 61.0) / "summary.json"
    damaged.write_text('{"method": "pdp", "perplexity": 61.0')
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["report", str(sweep), "--out", str(root / "rep")])
    return code, err.getvalue(), damaged, root / "rep"


def test_report_writes_every_png_and_a_self_contained_html(rendered):
    code, _, _, out = rendered
    assert code == 0
    expected = [f"{n}.png" for n in plots.PLOTS] + ["dashboard.png"]
    for name in expected:
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
    md = (out / "report.md").read_text()
    assert all(f"]({n})" in md for n in expected) and "Skipped" not in md
    assert "| trial-004 | pdp | 0.02 | 90 | 90.00 | 61.00 |" in md  # the run table carries the numbers
    assert "+144.0%" in md  # 61 vs the dense fine-tuned 25
    assert "| trial-005 | pdp@tau=0.05 | 0.05 | 90 |" in md  # a non-default tau is its own variant
    assert "tau must be > 0" in md  # the failed trial is listed
    html = (out / "report.html").read_text()
    imgs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(imgs) == len(expected) and not re.search(r'src="(?!data:)', html)
    assert base64.b64decode(imgs[0]) == (out / expected[0]).read_bytes()


def test_a_damaged_run_is_skipped_in_one_line_and_the_others_reported(rendered):
    code, err, damaged, out = rendered
    assert code == 0
    assert err.count("\n") == 1 and "Traceback" not in err and str(damaged) in err, err
    assert "malformed summary.json (Expecting" in err
    md = (out / "report.md").read_text()
    assert "| trial-009 |" not in md and "| trial-004 | pdp | 0.02 | 90 | 90.00 | 61.00 |" in md
    assert "8 finished run(s)" in md


def test_plots_that_lack_data_are_skipped_with_a_note(tmp_path, png_stand_ins):
    _run(tmp_path / "runs", "dense", "dense", 0.0, 25.0)
    _run(tmp_path / "runs", "gmp", "gmp", 0.75, 40.0, hist=False)
    res = write_report([tmp_path / "runs"], tmp_path / "rep")
    assert sorted(res["pngs"]) == ["dashboard.png", "layer_sparsity.png", "ppl_vs_sparsity.png",
                                   "training_curves.png"]
    md = (tmp_path / "rep" / "report.md").read_text()
    assert md.count("Skipped:") == 3 and "mask_hist.json" in md and "improved_masking" in md
    assert not (tmp_path / "rep" / "tau_heatmap.png").exists()


def test_collect_finds_runs_recursively_and_rejects_empty_input(tmp_path, sweep_dir):
    runs, failed = collect([sweep_dir, sweep_dir / "trial-001"])  # the same run twice counts once
    assert len(runs) == 8 and len(failed) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="no finished runs"):
        collect([empty])
    with pytest.raises(UsageError, match="no such"):
        collect([tmp_path / "missing"])


@pytest.mark.parametrize("file, content, needle", [
    ("summary.json", '{"method": "pdp", "perplexity": 61.0', "malformed summary.json (Expecting"),  # cut by a kill
    ("summary.json", "[1, 2]", "expected a JSON object"),
    ("summary.json", '{"method": "pdp", "perplexity": "n/a"}', "perplexity is 'n/a', not a number"),
    ("summary.json", '{"method": "pdp", "config": 3}', "config is not an object"),
    ("summary.json", b"\xff\xfe", "malformed summary.json"),
    ("summary.json", '{"method": 5, "perplexity": 61.0}', "method is 5, not a name"),
    ("metrics.jsonl", bytes(range(256)) * 4, "metrics.jsonl is not text"),
])
def test_a_damaged_run_is_skipped_in_one_line_and_the_others_kept(sweep_dir, capsys, file, content, needle):
    """Each kind of damage at the layer that reads runs; the report built from what it keeps is the
    end-to-end test below (one rendering, not one per kind of damage)."""
    bad = sweep_dir / "trial-003" / file
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    runs, failed = collect([sweep_dir])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and str(bad) in err and needle in err, err
    assert sorted(r.dir.name for r in runs) == [f"trial-{i:03d}" for i in range(8) if i != 3] and len(failed) == 1
    assert ["trial-004", "pdp", "0.02", "90", "90.00", "61.00"] in [row[:6] for row in runs_table(runs)[1]]


def test_only_damaged_runs_is_one_line_exit_2(tmp_path, capsys):
    _run(tmp_path / "runs", "a", "pdp", 0.9, 61.0)
    (tmp_path / "runs" / "a" / "summary.json").write_text("{")
    assert main(["report", str(tmp_path / "runs"), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "malformed summary.json" in err[0] and "no finished runs" in err[1], err
    assert not (tmp_path / "rep").exists()  # refused before anything was written


def test_damaged_optional_files_cost_only_their_plot(tmp_path, sweep_dir):
    (sweep_dir / "trial-004" / "mask_hist.json").write_text("{")
    with open(sweep_dir / "trial-004" / "metrics.jsonl", "a") as f:
        f.write('[1]\n{"loss": 1.0}\n{"step": 30, "lo')  # not records, no step, cut off
    runs, _ = collect([sweep_dir])
    run = next(r for r in runs if r.dir.name == "trial-004")
    assert run.hist is None and [m["step"] for m in run.metrics] == list(range(2, 21, 2))


def test_variant_labels_name_the_extensions():
    cfg = {"custom_optimizer": True, "pdp": {"improved_masking": True, "quantize": True, "bits": 4,
                                             "pattern": "unstructured", "allocation": "global"}}
    assert variant({"method": "pdp", "config": cfg}) == "pdp+improved+q4+maskopt+global"
    assert variant({"method": "gmp", "config": cfg}) == "gmp+q4+global"  # improved/maskopt don't apply
    assert variant({"method": "dense", "config": cfg}) == "dense"


@pytest.mark.slow
def test_report_on_real_training_runs(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    base = ["train", "--model", str(model_dir), "--dataset", str(corpus), "--max_steps", "6", "--warmup_steps",
            "3", "--batch_size", "4", "--max_length", "32", "--log_interval", "1", "--progress", "false"]
    # the tau plot compares plain pdp at two constant tau values (an annealed run is pdp+tau-exp)
    const = ["--tau_schedule", "constant"]
    runs = {"pdp-a": ["--tau", "0.02", *const], "pdp-b": ["--tau", "0.05", *const], "pdp-imp": ["--improved_masking"],
            "gmp": ["--method", "gmp"], "dense": ["--method", "dense"]}
    for name, extra in runs.items():
        assert main([*base, "--sparsity", "0.5", "--output_dir", str(tmp_path / "runs" / name), *extra]) == 0
    res = write_report([tmp_path / "runs"], tmp_path / "rep")
    assert res["runs"] == 5 and res["skipped"] == [] and len(res["pngs"]) == len(plots.PLOTS) + 1
    for name in res["pngs"]:
        data = (tmp_path / "rep" / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
