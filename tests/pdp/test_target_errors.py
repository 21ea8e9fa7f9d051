"""A run ends at the sparsity it was given, or is refused before its first step:
a ramp longer than the run, a target above the per-tensor cap."""
from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainingArguments

import pdp_gpt2
from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError


# ---- a ramp longer than the run ----------------------------------------------------------------
def test_schedule_refuses_a_ramp_longer_than_the_run(gpt2):
    pruner = pdp_gpt2.attach(gpt2, pdp_gpt2.PDPConfig(sparsity=0.9))
    # It was accepted: after 10 steps the cubic ramp stood at 0.9 * (1 - 0.9**3) = 0.244, and
    # finalize baked that in, with no word.
    with pytest.raises(ValueError, match=r"ramp_steps 100 is longer than the run \(total_steps 10\)"):
        pdp_gpt2.PruningSchedule(pruner, total_steps=10, ramp_steps=100)
    with pytest.raises(ValueError, match="ramp_steps must be >= 0"):
        pdp_gpt2.PruningSchedule(pruner, total_steps=10, ramp_steps=-1)
    sched = pdp_gpt2.PruningSchedule(pruner, total_steps=10, ramp_steps=10)  # ends exactly at the target
    for _ in range(10):
        sched.step()
    assert sched.sparsity_at(sched.steps) == pytest.approx(0.9)
    assert pruner.stats()["sparsity_hard"] == pytest.approx(0.9, abs=1e-3)


class _Blocks(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        ids = torch.arange(16) % 128
        return {"input_ids": ids, "labels": ids}


def test_callback_refuses_it_before_the_first_step(gpt2, tmp_path):
    with pytest.raises(ValueError, match="ramp_steps must be >= 0"):
        pdp_gpt2.PruningCallback(pdp_gpt2.PDPConfig(), ramp_steps=-3)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=2, report_to="none",
                             use_cpu=True, save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=gpt2, args=args, train_dataset=_Blocks(),
                      callbacks=[pdp_gpt2.PruningCallback(pdp_gpt2.PDPConfig(), ramp_steps=5)])
    with pytest.raises(ValueError, match=r"ramp_steps 5 is longer than the run \(total_steps 2\)"):
        trainer.train()
    assert trainer.state.global_step == 0


def _one_line(capsys, argv, needle, out):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and needle in err, err
    assert not out.exists()  # refused before anything was written
    return err


@pytest.fixture
def train_argv(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    out = tmp_path / "out"
    return out, ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
                 "--max_steps", "10", "--max_length", "32", "--progress", "false"]


def test_cli_refuses_warmup_steps_longer_than_max_steps(capsys, train_argv):
    out, argv = train_argv  # min(warmup_steps, total) used to shorten the ramp without a word
    _one_line(capsys, argv + ["--warmup_steps", "100"], "--warmup_steps 100 is longer than the run", out)


# ---- a target above the per-tensor cap ---------------------------------------------------------
@pytest.mark.parametrize("allocation", ["layer", "global"])
def test_config_refuses_a_target_above_the_cap(allocation):
    # Under layer allocation 0.99999 became 0.99 in every tensor, and the run printed "target 1.000".
    with pytest.raises(UsageError, match=r"sparsity 0\.99999 exceeds max_layer_sparsity 0\.99"):
        pdp_gpt2.PDPConfig(sparsity=0.99999, allocation=allocation)
    cfg = pdp_gpt2.PDPConfig(sparsity=0.99999, max_layer_sparsity=0.999995, allocation=allocation)
    assert cfg.sparsity == 0.99999


def test_a_target_at_a_raised_cap_is_reached_under_layer_allocation():
    lin = torch.nn.Linear(1000, 100, bias=False)
    model = torch.nn.Sequential(lin)
    pruner = pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=0.9995, max_layer_sparsity=0.9995, targets=["0"]))
    pruner.finalize()
    assert int((lin.weight == 0).sum()) == 99_950  # honoured, not 0.99


def test_cli_refuses_it_and_the_help_says_so(capsys, train_argv):
    out, argv = train_argv
    _one_line(capsys, argv + ["--sparsity", "0.99999"], "max_layer_sparsity", out)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_ = " ".join(capsys.readouterr().out.split())
    cap_help = help_.rsplit("--max_layer_sparsity MAX_LAYER_SPARSITY", 1)[1].split("(default")[0]
    assert "every tensor" in cap_help and "both allocations" in cap_help and "refused" in cap_help
