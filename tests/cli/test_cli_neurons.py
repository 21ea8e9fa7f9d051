"""`pdp-gpt2 train --pattern neurons`: whole MLP neurons, counted in the saved files (and the refusals of `heads`)."""
from __future__ import annotations

import json

import pytest
from helpers import train_tiny
from transformers import AutoModelForCausalLM

from pdp_gpt2.pdp.patterns.structures import mlp_structures, removed_units


def test_train_prunes_whole_neurons_and_says_what_a_shrink_removes(tmp_path, tiny_assets, capsys):
    rc, out = train_tiny(tmp_path, tiny_assets, "--pattern", "neurons", "--sparsity", "0.5")
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["layers"]) == {f"transformer.h.{i}.mlp.{n}" for i in (0, 1) for n in ("c_fc", "c_proj")}
    assert s["sparsity_actual"] == pytest.approx(0.5)
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    gone = [int(removed_units(st).sum()) for st in mlp_structures(model)]
    assert gone == [128, 128]  # half of each MLP's 256 neurons
    st = s["structure"]
    assert st["kind"] == "MLP neurons" and st["widths"] == [[256, 128], [256, 128]]
    assert st["parameters"] - st["parameters_after_shrink"] == 2 * 128 * (64 + 1 + 64)
    assert "MLP neurons 256 -> 128 per layer in 2 layers" in capsys.readouterr().out
    assert json.loads((out / "final" / "pdp_pruning.json").read_text())["pattern"] == "neurons"


@pytest.mark.parametrize("pattern, extra, message", [  # and the same refusals for whole heads
    ("neurons", ["--allocation", "global"], "use allocation 'layer'"),
    ("neurons", ["--targets", "*.mlp.c_fc"], "targets must name transformer.h.0.mlp.c_proj too"),
    ("neurons", ["--method", "wanda"], "patterns, not 'neurons'"),
    ("heads", ["--allocation", "global"], "use allocation 'layer'"),
    ("heads", ["--targets", "*.attn.c_attn"], "targets must name transformer.h.0.attn.c_proj too"),
    ("heads", ["--method", "sparsegpt"], "patterns, not 'heads'"),
])
def test_refusals_are_one_line_and_exit_2_before_any_work(tmp_path, tiny_assets, capsys, pattern, extra, message):
    rc, out = train_tiny(tmp_path, tiny_assets, "--pattern", pattern, "--sparsity", "0.5", *extra)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err
    assert not (out / "metrics.jsonl").exists() and not (out / "dense_eval.json").exists()


def test_a_trained_neurons_run_exports_shrunk_with_the_same_perplexity(tmp_path, tiny_assets):
    import torch

    from pdp_gpt2.cli import main

    rc, out = train_tiny(tmp_path, tiny_assets, "--pattern", "neurons", "--sparsity", "0.5")
    assert rc == 0
    assert main(["export", str(out / "final"), "--shrink", "--out", str(tmp_path / "small")]) == 0
    big = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "small").eval()
    assert small.config.n_inner == 128 and big.config.n_inner in (None, 256)
    x = torch.randint(0, big.config.vocab_size, (2, 16))
    with torch.no_grad():
        assert torch.allclose(big(x).logits, small(x).logits, atol=1e-5)
    s = json.loads((out / "summary.json").read_text())["structure"]
    assert sum(p.numel() for p in small.parameters()) == s["parameters_after_shrink"]
    shrink = json.loads((tmp_path / "small" / "pdp_pruning.json").read_text())["shrink"]
    assert shrink is not None
