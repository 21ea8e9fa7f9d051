"""Pattern, method and flag combinations that cannot run on the model's shapes are refused in one
line before any work (before the dense evaluation), not as a traceback after it."""
from __future__ import annotations

import pytest
import torch

from pdp_gpt2.cli import main
from pdp_gpt2.pdp import registry
from pdp_gpt2.pdp.registry import MethodSpec

METHODS = ("pdp", "magnitude", "gmp", "wanda", "movement", "sparsegpt")


@pytest.fixture
def no_dense_eval(monkeypatch):
    """Fail the test if the run gets as far as the dense evaluation."""
    from pdp_gpt2.train import run

    monkeypatch.setattr(run, "dense_perplexity", lambda *a, **k: pytest.fail("the dense evaluation ran first"))


def argv(tiny_assets, out, *extra):
    model, corpus = tiny_assets
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out), "--max_steps", "2",
            "--batch_size", "2", "--max_length", "32", "--progress", "false", *extra]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("method", METHODS)
def test_an_m_that_does_not_divide_the_inputs_is_refused_before_the_dense_evaluation(
        tiny_assets, tmp_path, capsys, no_dense_eval, method):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(argv(tiny_assets, out, "--method", method, "--pattern", "3:7")) == 2
    err = one_line(capsys)
    # the tiny GPT-2's blocks have 64 inputs (c_attn, c_fc) and 256 (the MLP's c_proj)
    assert "3:7" in err and "transformer.h.0.attn.c_attn.weight has 64 inputs" in err and "M=7" in err, err
    assert not out.exists()


def test_an_m_larger_than_the_inputs_is_refused_too(tiny_assets, tmp_path, capsys, no_dense_eval):
    out = tmp_path / "run"
    capsys.readouterr()
    assert main(argv(tiny_assets, out, "--pattern", "2:1000", "--max_layer_sparsity", "0.999")) == 2
    assert "has 64 inputs, not a multiple of M=1000" in one_line(capsys)


def test_sparsegpt_names_the_input_dimension_of_the_whole_row():
    from pdp_gpt2.pdp.methods.sparsegpt.driver import sparsegpt_prune

    w, x = torch.randn(4, 12), torch.randn(32, 12)
    with pytest.raises(ValueError, match=r"^input dimension 12 is not divisible by M=7$"):
        sparsegpt_prune(w, x.t() @ x, nm=(3, 7))


@pytest.mark.parametrize("driver, why", [("pdp_gpt2_no_such_plugin.driver:Driver", "cannot be loaded"),
                                         ("pdp_gpt2.pdp.registry:MethodSpec", "is not a MaskDriver subclass")])
def test_a_plugin_whose_driver_cannot_run_is_refused_before_the_dense_evaluation(
        tiny_assets, tmp_path, capsys, no_dense_eval, driver, why):
    registry.register(MethodSpec("broken", driver=driver))
    try:
        out = tmp_path / "run"
        capsys.readouterr()
        assert main(argv(tiny_assets, out, "--method", "broken")) == 2
        err = one_line(capsys)
        assert f"method 'broken': its driver {driver!r} {why}" in err, err
        assert not out.exists()
    finally:
        registry.unregister("broken")


@pytest.mark.parametrize("method", ["magnitude", pytest.param("sparsegpt", marks=pytest.mark.slow)])
def test_a_one_shot_method_streams_with_no_training_step(tiny_assets, tmp_path, method):
    import json

    out = tmp_path / "run"
    assert main(argv(tiny_assets, out, "--method", method, "--streaming", "--max_steps", "0",
                     "--sparsity", "0.5")) == 0
    s = json.loads((out / "summary.json").read_text())
    assert (s["train_steps"], s["sparsity_actual"]) == (0, 0.5)
