"""The trained state is on disk before the evaluations after training start: a checkpoint at the last
step, which --resume recognises as trained and not yet evaluated.  A signal or a failure during the
evaluations loses nothing (exit 130 / 143 or 2, one line) and --resume only evaluates and finishes.
With the default --save_steps 0 that checkpoint is removed once the run has finished."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train import checkpoint

import pdp_gpt2

SRC = os.path.dirname(os.path.dirname(pdp_gpt2.__file__))  # the source tree under test, for the subprocess


def argv(tiny_assets, out, *extra):
    model, corpus = tiny_assets
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out), "--max_steps", "3",
            "--warmup_steps", "2", "--batch_size", "2", "--max_length", "32", "--progress", "false",
            "--sparsity", "0.5", "--seed", "3", *extra]


def same_weights(a, b) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_the_last_step_is_saved_unless_the_loss_diverged():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pdp_gpt2.train.guard import RunGuard
    from pdp_gpt2.train.hf_trainer import SaveTrained

    args, guard = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none"), RunGuard()
    seen = []
    for step, diverged in ((7, None), (8, None), (8, (8, "the loss is nan"))):
        guard.diverged = diverged
        control = TrainerControl(should_save=False)
        SaveTrained(guard).on_step_end(args, TrainerState(global_step=step, max_steps=8), control)
        seen.append(control.should_save)
    assert seen == [False, True, False]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_evaluating_becomes_one_interrupted_line(tmp_path, sig):
    from pdp_gpt2.train.guard import Interrupted, evaluating

    before = signal.getsignal(sig)
    with pytest.raises(Interrupted) as e:
        with evaluating(tmp_path / "checkpoint-8"):
            os.kill(os.getpid(), sig)
            pytest.fail("the signal did not stop the evaluation")
    assert e.value.exit_status == 128 + sig
    assert str(e.value) == (f"stopped by {signal.Signals(sig).name} while evaluating the trained model; it is saved in "
                            f"{tmp_path / 'checkpoint-8'}; --resume evaluates it and finishes the run")
    assert signal.getsignal(sig) is before


@pytest.fixture(scope="module")
def ref(tiny_assets, tmp_path_factory):
    out = tmp_path_factory.mktemp("survives") / "ref"
    assert main(argv(tiny_assets, out)) == 0
    return out


@pytest.mark.slow
def test_a_finished_run_with_save_steps_0_keeps_no_checkpoint(ref):
    assert checkpoint.checkpoints(ref) == [] and (ref / "summary.json").is_file()
    assert not [p for p in ref.iterdir() if p.name.startswith(".checkpoint")]


@pytest.mark.slow
def test_a_failure_while_evaluating_keeps_the_trained_state_and_resume_finishes(
        tiny_assets, ref, tmp_path, capsys, monkeypatch):
    from pdp_gpt2.train import run

    run_dir = tmp_path / "run"
    real = run.evaluate
    with monkeypatch.context() as m:  # the evaluation of the pruned model fails, as lm-eval's data going would
        m.setattr(run, "evaluate", lambda model, tokens, cfg, desc, *rest: (_ for _ in ()).throw(UsageError("gone"))
                  if desc == "eval pruned" else real(model, tokens, cfg, desc, *rest))
        capsys.readouterr()
        assert main(argv(tiny_assets, run_dir)) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"pdp-gpt2 train: error: gone; the trained model is saved in {run_dir / 'checkpoint-3'}: "
                   "--resume evaluates it"), err
    assert [p.name for p in checkpoint.checkpoints(run_dir, complete_only=True)] == ["checkpoint-3"]
    assert not (run_dir / "summary.json").exists()
    assert main(argv(tiny_assets, run_dir, "--resume")) == 0
    assert "no training left, evaluating" in capsys.readouterr().err
    same_weights(ref, run_dir)
    assert checkpoint.checkpoints(run_dir) == []  # finished: the checkpoint made for the evaluations is gone


_KILL_WHILE_EVALUATING = """
import os, signal, sys
from pdp_gpt2.cli import main
from pdp_gpt2.train import run
real = run.evaluate
def evaluate(model, tokens, cfg, desc, *rest):
    if desc == "eval pruned":
        os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    return real(model, tokens, cfg, desc, *rest)
run.evaluate = evaluate
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_while_evaluating_is_one_line_and_resume_finishes(tiny_assets, ref, tmp_path, sig):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", _KILL_WHILE_EVALUATING, sig, *argv(tiny_assets, run_dir)],
                       capture_output=True, text=True, env=env, timeout=300)
    signum = getattr(signal, sig)
    assert p.returncode == 128 + signum, (p.returncode, p.stderr[-2000:])
    err = p.stderr.strip().splitlines()
    assert err == [f"pdp-gpt2 train: stopped by {sig} while evaluating the trained model; it is saved in "
                   f"{run_dir / 'checkpoint-3'}; --resume evaluates it and finishes the run"], p.stderr
    assert [p.name for p in checkpoint.checkpoints(run_dir, complete_only=True)] == ["checkpoint-3"]
    assert not (run_dir / "summary.json").exists() and not (run_dir / "final").exists()
    assert main(argv(tiny_assets, run_dir, "--resume")) == 0
    same_weights(ref, run_dir)
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["train_steps"] == 3 and checkpoint.checkpoints(run_dir) == []


@pytest.mark.slow
def test_a_checkpoint_the_user_asked_for_at_the_last_step_is_kept(tiny_assets, tmp_path):
    out = tmp_path / "run"
    assert main(argv(tiny_assets, out, "--max_steps", "4", "--save_steps", "2")) == 0
    assert [p.name for p in checkpoint.checkpoints(out, complete_only=True)] == ["checkpoint-2", "checkpoint-4"]


@pytest.mark.slow
def test_a_last_step_between_save_steps_is_saved_for_the_evaluations_and_removed_after(tiny_assets, tmp_path,
                                                                                        monkeypatch):
    from pdp_gpt2.train import run

    out = tmp_path / "run"
    seen = []
    real = run.evaluate
    monkeypatch.setattr(run, "evaluate", lambda model, tokens, cfg, desc, *rest: (
        seen.append((desc, [p.name for p in checkpoint.checkpoints(out, complete_only=True)])),
        real(model, tokens, cfg, desc, *rest))[1])
    assert main(argv(tiny_assets, out, "--save_steps", "2")) == 0
    both = ["checkpoint-2", "checkpoint-3"]
    assert seen == [("eval soft", both), ("eval pruned", both)]  # the dense evaluation is dense_cache's
    assert [p.name for p in checkpoint.checkpoints(out)] == ["checkpoint-2"]
