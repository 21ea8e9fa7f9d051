"""A NaN loss stops the run at that step, keeps the last good checkpoint, exits 3;
a signal makes the guard save a checkpoint and stop."""
import math
import re
import signal

import torch
from safetensors.torch import load_file
from transformers import TrainerControl, TrainerState, TrainingArguments

from pdp_gpt2.train import checkpoint
from pdp_gpt2.train.metrics_log import MetricsLog
from pdp_gpt2.cli import main
from pdp_gpt2.train.guard import DivergedError, Interrupted, RunGuard


def test_huge_learning_rate_stops_with_exit_3_and_keeps_the_last_good_checkpoint(tmp_path, tiny_assets, capsys):
    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    rc = main(["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
               "--max_steps", "6", "--save_steps", "1", "--warmup_steps", "2", "--batch_size", "4",
               "--max_length", "32", "--log_interval", "1", "--progress", "false", "--lr_warmup_steps", "0",
               "--sparsity", "0.5", "--learning_rate", "1e6", "--max_grad_norm", "0"])
    assert rc == 3
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    m = re.search(r"training diverged at step (\d+): the loss is (nan|inf)", err)
    assert m, err
    step = int(m.group(1))
    assert step >= 2  # step 1 starts from the pretrained weights; its update is what blows up
    good = out / f"checkpoint-{step - 1}"
    assert f"the last good checkpoint is {good}" in err
    assert [p.name for p in checkpoint.checkpoints(out)] == [f"checkpoint-{s}" for s in range(1, step)]
    assert checkpoint.is_complete(good)
    assert all(torch.isfinite(w).all() for w in load_file(good / "model.safetensors").values())
    assert not (out / "final").exists() and not (out / "summary.json").exists()
    logged = MetricsLog(out / "metrics.jsonl").read()  # the diverged step is not logged
    assert [r["step"] for r in logged] == list(range(1, step)) and all(math.isfinite(r["loss"]) for r in logged)


class _Out:
    def __init__(self, loss):
        self.loss = loss


def _step(guard, model, loss, step=5, should_save=False):
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    state, control = TrainerState(), TrainerControl()
    state.global_step = step
    model.train()
    guard._watch_loss(model, (), _Out(torch.tensor(loss)))
    guard.on_pre_optimizer_step(args, state, control, model=model)
    control.should_save = should_save  # what DefaultFlowCallback decided for this step
    guard.on_step_end(args, state, control)
    return control


def test_guard_drops_the_bad_step_and_never_saves_it(tmp_path):
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.ones(2, 2)
    guard = RunGuard()
    control = _step(guard, model, 1.5, should_save=True)
    # a checkpoint step is not made a log step (the loss window travels in the checkpoint instead)
    assert control.should_save and not control.should_log and not control.should_training_stop
    assert model.weight.grad is not None and guard.stop_error(tmp_path) is None

    control = _step(guard, model, float("nan"), step=6, should_save=True)
    assert not control.should_save and not control.should_log and control.should_training_stop
    assert model.weight.grad is None  # the optimizer will skip the update: weights stay finite
    e = guard.stop_error(tmp_path)
    assert isinstance(e, DivergedError) and e.exit_status == 3
    assert "step 6: the loss is nan" in str(e) and "no checkpoint was saved" in str(e)


def test_guard_catches_non_finite_gradients_with_a_finite_loss(tmp_path):
    model = torch.nn.Linear(2, 2)
    model.weight.grad = torch.tensor([[1.0, float("inf")], [0.0, 0.0]])
    guard = RunGuard()
    control = _step(guard, model, 2.0)
    assert control.should_training_stop and "the gradients are not finite" in str(guard.stop_error(tmp_path))


def test_a_signal_saves_a_checkpoint_at_the_end_of_the_step(tmp_path):
    model = torch.nn.Linear(2, 2)
    guard = RunGuard()
    guard._on_signal(signal.SIGTERM, None)
    control = _step(guard, model, 1.0, step=7)
    assert control.should_save and control.should_training_stop and not control.should_log  # no extra line
    e = guard.stop_error(tmp_path)
    assert isinstance(e, Interrupted) and e.exit_status == 143
    assert str(e) == f"stopped by SIGTERM at step 7; saved {tmp_path / 'checkpoint-7'}; continue with --resume"


def test_signal_handlers_are_installed_only_while_training():
    before = signal.getsignal(signal.SIGTERM)
    guard = RunGuard()
    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    guard.on_train_begin(args, TrainerState(), TrainerControl(), model=torch.nn.Linear(1, 1))
    assert signal.getsignal(signal.SIGTERM) == guard._on_signal
    guard.on_train_end(args, TrainerState(), TrainerControl())
    assert signal.getsignal(signal.SIGTERM) == before and guard._hook is None
