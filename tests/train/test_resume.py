"""Kill a run right after a checkpoint, resume it, and get the uninterrupted run's exact bits.

The model has dropout (0.1 everywhere), so a resume that lost the RNG state, the data
order or the PDP schedule step would end with different weights, not merely similar ones.
"""
import json
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pdp_gpt2.train import checkpoint
from pdp_gpt2.train.metrics_log import MetricsLog
from pdp_gpt2.cli import main

from helpers import ROOT, without_times


@pytest.fixture(scope="module")
def dropout_model(tiny_assets, tmp_path_factory):
    model_dir, corpus = tiny_assets
    out = tmp_path_factory.mktemp("dropout") / "model"
    shutil.copytree(model_dir, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    (out / "config.json").write_text(json.dumps(cfg))
    return out, corpus


def _argv(model, corpus, out, *extra):
    # log_interval 2 with save_steps 3: the loss window open at the checkpoint (step 3) travels in it,
    # or the resumed run would log the loss of step 4 alone where the uninterrupted one averages 3..4.
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "6", "--save_steps", "3", "--warmup_steps", "4", "--batch_size", "4",
            "--max_length", "32", "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0",
            "--sparsity", "0.75", "--allocation", "global", "--seed", "7", *extra]


def _wait_for(predicate, proc, timeout=180.0):
    t0 = time.time()
    while not predicate():
        assert proc.poll() is None, f"run exited early with {proc.returncode}"
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.02)


@pytest.mark.slow  # a training process killed and a second one resumed, both in fresh interpreters
@pytest.mark.parametrize("extra", [pytest.param((), id="in_memory"), pytest.param(("--streaming",), id="streaming")])
def test_sigkill_after_checkpoint_then_resume_is_bit_identical(tmp_path, dropout_model, extra):
    model, corpus = dropout_model
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(_argv(model, corpus, a, *extra)) == 0

    log = open(tmp_path / "b.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pdp_gpt2.cli", *_argv(model, corpus, b, *extra)], cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: checkpoint.checkpoints(b, complete_only=True), proc)
        proc.kill()  # SIGKILL: no handler runs, nothing is flushed or cleaned up
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (b / "summary.json").exists() and not (b / "final").exists()
    last = checkpoint.checkpoints(b, complete_only=True)[-1]
    # A later checkpoint the kill interrupted mid-write: must be ignored, then replaced.
    torn = b / f"checkpoint-{checkpoint.step_of(last) + 1}"
    shutil.copytree(last, torn)
    (torn / checkpoint.PDP_STATE).unlink()
    data = (torn / "model.safetensors").read_bytes()
    (torn / "model.safetensors").write_bytes(data[: len(data) // 2])

    assert main(_argv(model, corpus, b, *extra, "--resume")) == 0
    assert not torn.exists()

    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    diff = {k: (wa[k] - wb[k]).abs().max().item() for k in wa}
    assert all(torch.equal(wa[k], wb[k]) for k in wa), diff  # bit-identical, not merely close
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sb["sparsity_actual"] == sa["sparsity_actual"] and sb["layers"] == sa["layers"]
    assert sb["perplexity"] == sa["perplexity"] and sb["perplexity_dense"] == sa["perplexity_dense"]
    ma, mb = (MetricsLog(d / "metrics.jsonl").read() for d in (a, b))
    assert [r["step"] for r in mb] == [2, 4, 6]  # each log step once; the checkpoint (3) is not one
    # where the time went: one wall time per step since the previous line, and the training time so far,
    # which goes on from the checkpoint's across the resume
    assert [len(r["step_seconds"]) for r in mb] == [2, 2, 2] and all(s > 0 for r in mb for s in r["step_seconds"])
    assert 0 < mb[0]["train_seconds"] < mb[1]["train_seconds"] < mb[2]["train_seconds"]
    assert mb[2]["train_seconds"] >= sum(s for r in mb for s in r["step_seconds"]) * 0.99
    assert without_times(ma) == without_times(mb)  # same losses too: step 4's window (3..4) was carried in checkpoint-3


def test_resume_refuses_an_incomplete_checkpoint_and_changed_flags(tmp_path, dropout_model, capsys):
    model, corpus = dropout_model
    out = tmp_path / "run"
    ckpt = out / "checkpoint-3"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer_state.json").write_text("{}")  # but no pdp_state.json: killed while saving
    assert main(_argv(model, corpus, out, "--resume", str(ckpt))) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "incomplete checkpoint" in err and "pdp_state.json" in err
    assert main(_argv(model, corpus, out, "--resume")) == 2
    assert "no complete checkpoint" in capsys.readouterr().err


def test_resume_with_other_flags_is_refused(tmp_path, dropout_model, capsys):
    model, corpus = dropout_model
    out = tmp_path / "run"
    ckpt = out / "checkpoint-3"
    ckpt.mkdir(parents=True)
    for name in checkpoint.CHECKPOINT_NEEDS:
        (ckpt / name).write_text('{"global_step": 3}')  # parses as a checkpoint: resume's checks pass
    from pdp_gpt2.cli.main import build_parser
    from pdp_gpt2.cli.train import config_from_args

    old = config_from_args(build_parser().parse_args(_argv(model, corpus, out)))
    (out / "run_config.json").write_text(json.dumps(old.to_dict()))
    # --max_steps may change (to extend a run); what the checkpoint's masks and data order depend on may not
    argv = _argv(model, corpus, out, "--resume", "--sparsity", "0.5", "--batch_size", "8", "--max_steps", "20")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "different --batch_size, --sparsity than" in err, err


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_run_resumes(tmp_path, dropout_model):
    model, corpus = dropout_model
    out = tmp_path / "run"
    # tau constant: the resume below ends the run early, which an annealed tau's plan (to step 500) refuses
    argv = _argv(model, corpus, out, "--tau_schedule", "constant")
    argv[argv.index("--max_steps") + 1] = "500"
    argv[argv.index("--save_steps") + 1] = "0"  # no periodic checkpoints: the signal must make one
    argv[argv.index("--log_interval") + 1] = "1"
    err = open(tmp_path / "err.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "pdp_gpt2.cli", *argv], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=err)
    try:
        _wait_for(lambda: (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").stat().st_size > 0, proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    last = (tmp_path / "err.log").read_text().strip().splitlines()[-1]
    [ckpt] = checkpoint.checkpoints(out, complete_only=True)
    step = checkpoint.step_of(ckpt)
    assert "SIGTERM" in last and f"step {step}" in last and str(ckpt) in last and "--resume" in last
    assert json.loads((ckpt / "trainer_state.json").read_text())["global_step"] == step
    assert json.loads((ckpt / checkpoint.PDP_STATE).read_text())["steps"] == step
    assert not (out / "summary.json").exists()

    resume = _argv(model, corpus, out, "--tau_schedule", "constant", "--resume")
    total = max(step + 2, 4)  # not before the end of the ramp (--warmup_steps 4)
    resume[resume.index("--max_steps") + 1] = str(total)
    assert main(resume) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["train_steps"] == total and s["sparsity_actual"] == pytest.approx(0.75, abs=1e-3)
    steps = [r["step"] for r in MetricsLog(out / "metrics.jsonl").read()]
    assert steps == sorted(set(steps)) and steps[-1] == total
