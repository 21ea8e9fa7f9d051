"""What the release before house v3 wrote (tests/fixtures/previous_release, made by
tests/fixtures/make_previous_release.py at 849123d) still resumes, exports, loads and reports."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from helpers import ROOT, killed_copy
from safetensors.torch import load_file

from pdp_gpt2.cli import main

FIXTURE = ROOT / "tests" / "fixtures" / "previous_release"
FLAGS = ["--model", "model", "--dataset", "corpus.txt", "--max_steps", "6", "--warmup_steps", "4",
         "--batch_size", "4", "--max_length", "32", "--log_interval", "2", "--progress", "false",
         "--lr_warmup_steps", "0", "--save_steps", "3", "--sparsity", "0.75"]


def same_stack() -> bool:
    """The fixture's bytes are exact only on the CPU kernels and versions that wrote them."""
    import transformers

    s = json.loads((FIXTURE / "stack.json").read_text())
    return (s["cpu"], s["torch"], s["transformers"], s["threads"]) == (
        torch.backends.cpu.get_cpu_capability(), torch.__version__, transformers.__version__, torch.get_num_threads())


@pytest.fixture
def old(tmp_path, monkeypatch):
    work = tmp_path / "rel"
    shutil.copytree(FIXTURE, work)
    monkeypatch.chdir(work)  # the runs recorded relative paths
    return work


@pytest.mark.skipif(int(__import__("numpy").__version__.split(".")[0]) < 2,
                    reason="its checkpoint's RNG state was pickled under numpy 2, which numpy 1 cannot read; "
                           "a run resumes on the stack that wrote it")
@pytest.mark.parametrize("method", ["pdp", "gmp"])
def test_its_checkpoint_resumes_to_the_same_final_weights(old, method):
    killed_copy(FIXTURE / method, old / f"{method}-killed")  # checkpoint-3 kept, final/ and summary.json gone
    shutil.rmtree(old / method)
    (old / f"{method}-killed").rename(old / method)
    assert main(["train", *FLAGS, "--method", method, "--output_dir", method, "--resume"]) == 0
    assert json.loads((old / method / "summary.json").read_text())["train_steps"] == 6
    new = load_file(str(old / method / "final" / "model.safetensors"))
    ref = load_file(str(FIXTURE / method / "final" / "model.safetensors"))
    assert new.keys() == ref.keys()
    for k in ref:
        if not same_stack():  # other kernels round differently: the same run, to float tolerance
            assert torch.allclose(new[k], ref[k], rtol=1e-3, atol=1e-5), k
        elif method == "pdp":  # the saturation floor (mask.Z_FLOOR) came after that release: last digits move
            assert torch.equal(new[k] == 0, ref[k] == 0) and torch.allclose(new[k], ref[k], rtol=0, atol=1e-6), k
        else:
            assert torch.equal(new[k], ref[k]), k


@pytest.mark.skipif(int(__import__("transformers").__version__.split(".")[0]) < 5,
                    reason="its final/ holds tokenizer files written by transformers 5, which 4.x cannot read")
def test_its_export_loads_and_its_final_exports_again(old):
    from pdp_gpt2 import load_compressed

    model = load_compressed("pdp-export")
    ref = load_file(str(FIXTURE / "pdp" / "final" / "model.safetensors"))
    state = model.state_dict()
    assert all(torch.equal(state[k], ref[k]) for k in ref)
    assert main(["export", "pdp", "--out", "again"]) == 0
    assert (old / "again" / "model.pdp.safetensors").read_bytes() == (old / "pdp-export" / "model.pdp.safetensors").read_bytes()


def test_its_runs_report(old, capsys):
    assert main(["report", "pdp", "gmp", "--out", "report"]) == 0
    text = (old / "report" / "report.md").read_text()
    assert "2 finished run(s)" in text and "2 run(s)" in capsys.readouterr().out
