"""Two processes on CPU (gloo) through the same CLI: every rank computes the same masks at
every step, rank 0 alone writes, and the final model has exactly the target sparsity."""
import json
import os
import subprocess
import sys

import pytest
from transformers import AutoModelForCausalLM

from pdp_gpt2.train import checkpoint
from pdp_gpt2.train.metrics_log import MetricsLog
from pdp_gpt2.cli import main

from helpers import ROOT, TESTS


@pytest.mark.slow  # multi-process (torchrun, 2 ranks)
def test_two_ranks_compute_identical_masks_and_rank0_writes(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    out, digests = tmp_path / "run", tmp_path / "digests"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # mask_digests.py: the CLI plus a callback writing each rank's per-step mask digests into digests/
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "train" / "mask_digests.py"), str(digests),
           "train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
           "--max_steps", "6", "--warmup_steps", "4", "--save_steps", "3",
           "--batch_size", "4", "--max_length", "32", "--log_interval", "2", "--progress", "false",
           "--lr_warmup_steps", "0", "--sparsity", "0.75"]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]

    ranks = [json.loads((digests / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert [d["world_size"] for d in ranks] == [2, 2]
    assert list(ranks[0]["steps"]) == [str(s) for s in range(1, 7)]
    assert ranks[0]["steps"] == ranks[1]["steps"]  # thresholds bitwise equal at every step
    assert len(set(ranks[0]["steps"].values())) == 6  # and they did change: the digest is not of constants

    s = json.loads((out / "summary.json").read_text())
    assert s["train_steps"] == 6 and s["sparsity_actual"] == pytest.approx(0.75, abs=1e-4)
    m = AutoModelForCausalLM.from_pretrained(out / "final")
    for name, d in s["layers"].items():
        w = m.get_submodule(name).weight
        assert int((w == 0).sum()) == d["zeros"] == int(0.75 * w.numel()), name
    # one writer: each step logged once, one checkpoint per save with both ranks' RNG states
    assert [x["step"] for x in MetricsLog(out / "metrics.jsonl").read()] == [2, 4, 6]
    assert [p.name for p in checkpoint.checkpoints(out, complete_only=True)] == ["checkpoint-3", "checkpoint-6"]
    ckpt = out / "checkpoint-3"
    assert (ckpt / "rng_state_0.pth").is_file() and (ckpt / "rng_state_1.pth").is_file()
    assert json.loads((ckpt / checkpoint.PDP_STATE).read_text())["steps"] == 3
    window = json.loads((ckpt / "metrics_state.json").read_text())["loss"]  # each rank's open loss sum (step 3)
    assert window["since"] == 2 and len(window["sums"]) == 2 and all(x > 0 for x in window["sums"])
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("var, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_sharded_launchers_are_refused_with_one_line(tmp_path, tiny_assets, capsys, monkeypatch, var, name):
    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    monkeypatch.setenv(var, "true")
    rc = main(["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
               "--max_steps", "2", "--max_length", "32", "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and f"{name} is not supported" in err, err
    assert not out.exists()


@pytest.mark.slow  # multi-process (torchrun, 2 ranks)
def test_two_ranks_prune_the_same_whole_neurons(tmp_path, tiny_assets):
    from pdp_gpt2.pdp.patterns.structures import mlp_structures, removed_units

    model_dir, corpus = tiny_assets
    out, digests = tmp_path / "run", tmp_path / "digests"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(TESTS / "train" / "mask_digests.py"), str(digests),
           "train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
           "--max_steps", "6", "--warmup_steps", "4", "--batch_size", "4", "--max_length", "32",
           "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0",
           "--pattern", "neurons", "--sparsity", "0.5"]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((digests / f"rank{i}.json").read_text()) for i in (0, 1)]
    assert ranks[0]["steps"] == ranks[1]["steps"] and len(set(ranks[0]["steps"].values())) == 6
    m = AutoModelForCausalLM.from_pretrained(out / "final")
    assert [int(removed_units(s).sum()) for s in mlp_structures(m)] == [128, 128]
