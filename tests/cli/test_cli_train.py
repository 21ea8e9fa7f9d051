"""The real CLI end to end on a tiny model: a few steps, real files, real numbers."""
import json
import math
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from helpers import ROOT, train_tiny


def test_train_end_to_end_writes_contract(tmp_path, tiny_assets):
    rc, out = train_tiny(tmp_path, tiny_assets, "--sparsity", "0.75", "--tau", "0.02")
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("method", "model", "dataset", "sparsity_target", "sparsity_actual", "perplexity",
                "perplexity_dense", "perplexity_soft", "tau", "train_steps", "train_seconds", "config"):
        assert key in s, key
    assert s["method"] == "pdp" and s["train_steps"] == 12 and s["tau"] == 0.02
    assert s["sparsity_actual"] == pytest.approx(0.75, abs=1e-3)
    assert all(math.isfinite(s[k]) and s[k] > 1 for k in ("perplexity", "perplexity_dense", "perplexity_soft"))
    # final/ is a plain HF model with the reported zeros
    m = AutoModelForCausalLM.from_pretrained(out / "final")
    for name, d in s["layers"].items():
        w = m.get_submodule(name).weight
        assert int((w == 0).sum()) == d["zeros"] == int(0.75 * w.numel()), name
    assert not any("parametrizations" in k for k in m.state_dict())
    # metrics: one line per log step with sparsity following the ramp to the target
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [2, 4, 6, 8, 10, 12]
    assert lines[-1]["sparsity_target"] == pytest.approx(0.75)
    assert lines[0]["sparsity_target"] < lines[2]["sparsity_target"]
    assert all(math.isfinite(r["loss"]) for r in lines)
    assert "transformer.h.1.mlp.c_proj" in (out / "layers.md").read_text()


@pytest.mark.slow  # a training run in a fresh interpreter
def test_main_py_accepts_original_flags(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    out = tmp_path / "orig"
    cmd = [sys.executable, "main.py", "--sparsity", "0.5", "--tau", "0.02", "--num_epochs", "1",
           "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out), "--max_steps", "3",
           "--batch_size", "4", "--max_length", "32", "--progress", "false", "--improved_masking", "--beta", "3",
           "--quantize", "--bits", "8", "--custom_optimizer", "--learning_rate", "1e-3", "--weight_decay", "0.01",
           "--lr_warmup_steps", "1", "--max_grad_norm", "1.0", "--log_interval", "1", "--warmup_epochs", "0.1",
           "--run_name", "compat"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       cwd=str(ROOT))
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["config"]["pdp"]["improved_masking"] and s["config"]["pdp"]["quantize"] and s["config"]["custom_optimizer"]
    assert s["sparsity_actual"] >= 0.5


def test_dense_method_has_no_zeros(tmp_path, tiny_assets):
    rc, out = train_tiny(tmp_path, tiny_assets, "--method", "dense", "--max_steps", "2", "--warmup_steps", "1")
    s = json.loads((out / "summary.json").read_text())
    assert rc == 0 and s["sparsity_actual"] == 0.0 and s["perplexity_soft"] is None


def test_gradient_accumulation_refreshes_once_per_optimizer_step(tmp_path, tiny_assets):
    rc, out = train_tiny(tmp_path, tiny_assets, "--gradient_accumulation_steps", "2", "--sparsity", "0.5",
                         "--max_steps", "4", "--warmup_steps", "2")
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert rc == 0 and [r["step"] for r in lines] == [2, 4]  # steps count optimizer steps, not micro-batches


def test_trainer_uses_fused_adamw_on_cpu(tmp_path):
    """One vectorized kernel; the per-tensor loop is ~5x slower on GPT-2 small and several
    times slower again on the zeros pruning puts in Adam's second moment (docs/performance.md)."""
    from pdp_gpt2.train.config import TrainConfig
    from pdp_gpt2.train.args import fused_adamw_ok, training_args

    assert fused_adamw_ok()
    assert training_args(TrainConfig(), tmp_path, 10).optim == "adamw_torch_fused"


def test_progress_bar_carries_the_loss_instead_of_printed_dicts(tmp_path, tiny_assets, capsys):
    rc, out = train_tiny(tmp_path, tiny_assets, "--progress", "true")
    assert rc == 0
    cap = capsys.readouterr()
    both = cap.out + cap.err
    assert "{'loss'" not in both and "'train_runtime'" not in both  # no dict lines between bar updates
    assert "loss=" in cap.err and "sparsity=" in cap.err  # the bar's postfix (tqdm writes to stderr)
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 6  # every logged step still recorded


def test_a_registered_pattern_appears_in_train_help(monkeypatch):
    """--pattern's help lists the pattern registry, so a pattern added there is offered in --help."""
    import argparse

    from pdp_gpt2.cli import train as train_cli
    from pdp_gpt2.pdp import patterns

    class Diagonal(patterns.Pattern):
        name = "diagonal"
        help = "the main diagonal of every weight"

    monkeypatch.setitem(patterns.PATTERNS, "diagonal", Diagonal)
    parser = argparse.ArgumentParser()
    train_cli.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "diagonal: the main diagonal of every weight" in text
    assert "unstructured: " in text and "row: " in text and "N:M: " in text
