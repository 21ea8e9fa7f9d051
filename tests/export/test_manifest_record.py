"""Export refuses a pdp_pruning.json whose descriptive fields disagree with the run's own record
(summary.json), or, in a bare model directory, with its own per-tensor targets: an edited method or
sparsity_target was sealed into the export, and its card said "gmp at 0.5"."""
import json
import shutil

import pytest

from pdp_gpt2.cli import main
from pdp_gpt2.data.manifest import MANIFEST, write_manifest
from pdp_gpt2.export.writer import export

from helpers import pruned_copy
from test_export_safety import _manifest_of


@pytest.fixture(scope="module")
def run_once(tiny_assets, tmp_path_factory):
    """A run directory: final/ (90 % zeros, manifest) and the summary.json the run wrote beside it."""
    run = tmp_path_factory.mktemp("src") / "run"
    final = pruned_copy(tiny_assets[0], run / "final")
    man = _manifest_of(final)
    write_manifest(final, man)
    (run / "summary.json").write_text(json.dumps({
        "method": "pdp", "model": "tiny", "dataset": "corpus.txt", "sparsity_target": 0.9,
        "sparsity_actual": man["sparsity_actual"], "config": {"method": "pdp", "model": "tiny", "pdp": {
            "sparsity": 0.9, "pattern": "unstructured", "allocation": "layer", "tau": 0.02, "tau_mode": "relative",
            "quantize": False, "bits": 8}}}))
    return run


@pytest.fixture
def run(run_once, tmp_path):
    return shutil.copytree(run_once, tmp_path / "run")


def _edit(model_dir, **fields):
    m = json.loads((model_dir / MANIFEST).read_text())
    (model_dir / MANIFEST).write_text(json.dumps({**m, **fields}))


def _refused(capsys, src, out, *needles):
    capsys.readouterr()
    assert main(["export", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert not out.exists()


def test_an_intact_run_exports(run, tmp_path):
    report = export(run, tmp_path / "out")
    assert json.loads((tmp_path / "out" / MANIFEST).read_text())["method"] == "pdp" and report["format"]


@pytest.mark.parametrize("edit, needle", [
    ({"method": "gmp"}, "method 'gmp'"), ({"sparsity_target": 0.5}, "sparsity_target 0.5"),
    ({"pattern": "2:4"}, "pattern '2:4'"), ({"base_model": "gpt2"}, "base_model 'gpt2'"),
    ({"dataset": "wikitext"}, "dataset 'wikitext'"), ({"tau": 0.5}, "tau 0.5"), ({"bits": 4}, "bits 4"),
])
@pytest.mark.parametrize("src", ["run", "run/final"])
def test_a_manifest_edited_away_from_the_run_record_is_refused(run, tmp_path, capsys, edit, needle, src):
    _edit(run / "final", **edit)
    _refused(capsys, tmp_path / src, tmp_path / "out", MANIFEST, needle, "summary.json")


def test_a_bare_model_directory_is_checked_against_its_tensor_targets(run, tmp_path, capsys):
    bare = shutil.copytree(run / "final", tmp_path / "bare")
    _edit(bare, sparsity_target=0.5)
    _refused(capsys, bare, tmp_path / "out", MANIFEST, "sparsity_target 0.5", "0.9")
