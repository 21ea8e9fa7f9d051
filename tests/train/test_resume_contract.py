"""The resume contract (docs/runs.md): what may change on resume, what an extension
does, what metrics.jsonl guarantees, what a kill or a double Ctrl-C leaves behind.

Fast tests refuse things before any work, or drive a plain Trainer with the public callback;
`slow` ones run the CLI (an 8-step reference run, then a kill, a signal or an extension)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import types
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import pdp_gpt2
from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.callback import STATE_FILE
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.train import checkpoint, rundir
from pdp_gpt2.train.metrics_log import MetricsLog
from pdp_gpt2.train.config import transformers_version

from helpers import Blocks, killed_copy, model_with_dropout, without_times


def argv(model, corpus, out, *extra):
    """An 8-step run: ramp 4, tau annealed over 4..8, checkpoints at 4 and 8, a line every 2 steps."""
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "8", "--save_steps", "4", "--warmup_steps", "4", "--batch_size", "4",
            "--max_length", "32", "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0",
            "--sparsity", "0.75", "--tau_final", "0.001", "--seed", "7", *extra]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def fake_run(tiny_assets, run: Path, step: int = 4, schedule: dict | None = None, *flags) -> Path:
    """run/ as `train` leaves it (run_config.json of argv + flags) with a checkpoint-<step> that passes
    resume's checks (its weights are not real: every test here is refused before loading them)."""
    from pdp_gpt2.cli.main import build_parser
    from pdp_gpt2.cli.train import config_from_args

    model, corpus = tiny_assets
    cfg = config_from_args(build_parser().parse_args(argv(model, corpus, run, *flags)))
    ckpt = run / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (run / "run_config.json").write_text(json.dumps(cfg.to_dict()))
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 8}))
    plan = schedule or {"total_steps": 8, "ramp_steps": 4, "kind": "cubic", "tau_schedule": "exp",
                        "tau_final": 0.001, "tau_start": 4, "tau_end": 8}
    (ckpt / STATE_FILE).write_text(json.dumps({"steps": step, "schedule": plan}))
    return ckpt


def without(args: list[str], flag: str) -> list[str]:
    i = args.index(flag)
    return args[:i] + args[i + 2:]


# ---- a plain Trainer with the public callback (tiny GPT-2 with dropout) --------------------------


def targs(out, steps, **kw):
    from transformers import TrainingArguments

    return TrainingArguments(**{**dict(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4,
                                       learning_rate=3e-3, logging_steps=1, save_strategy="steps", save_steps=4,
                                       report_to="none", use_cpu=True, seed=0, data_seed=0, disable_tqdm=True,
                                       dataloader_num_workers=0), **kw})


def recorder():
    from transformers import TrainerCallback

    class Recorder(TrainerCallback):
        logs: list = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.logs.append({"step": state.global_step, **logs})

    r = Recorder()
    r.logs = []
    return r


# ---- 2. --resume DIR/checkpoint-N checks what --resume checks ------------------------------------


def test_explicit_checkpoint_into_another_directory_with_other_pdp_settings_is_refused(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    ckpt = fake_run(tiny_assets, tmp_path / "a")
    fork = tmp_path / "b"
    assert main(argv(model, corpus, fork, "--resume", str(ckpt), "--sparsity", "0.5")) == 2
    err = one_line(capsys)
    assert "different --sparsity than the run in" in err and str(tmp_path / "a") in err, err
    assert not (fork / "run_config.json").exists()


def test_explicit_checkpoint_in_its_own_directory_with_other_pdp_settings_is_refused(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    ckpt = fake_run(tiny_assets, tmp_path / "a")
    assert main(argv(model, corpus, tmp_path / "a", "--resume", str(ckpt), "--sparsity", "0.5")) == 2
    assert "different --sparsity than" in one_line(capsys)


def test_explicit_checkpoint_without_its_run_config_is_refused(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    ckpt = fake_run(tiny_assets, tmp_path / "a")
    (tmp_path / "a" / "run_config.json").unlink()
    assert main(argv(model, corpus, tmp_path / "b", "--resume", str(ckpt))) == 2
    err = one_line(capsys)
    assert "run_config.json" in err and "cannot be checked" in err, err


def test_explicit_checkpoint_into_a_directory_holding_another_run_is_refused(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    ckpt = fake_run(tiny_assets, tmp_path / "a")
    other = tmp_path / "other"
    other.mkdir()
    (other / "metrics.jsonl").write_text('{"step": 2}\n')
    assert main(argv(model, corpus, other, "--resume", str(ckpt))) == 2
    err = one_line(capsys)
    assert str(other) in err and "holds files" in err, err
    assert (other / "metrics.jsonl").read_text() == '{"step": 2}\n'


# ---- 3. anything that shapes the schedules may not change ---------------------------------------


@pytest.mark.parametrize("flag, value", [("--warmup_steps", "2"), ("--schedule", "linear"),
                                         ("--tau_schedule", "cosine"), ("--tau_final", "0.01"), ("--tau", "0.2")])
def test_a_changed_schedule_flag_is_refused_on_resume(tiny_assets, tmp_path, capsys, flag, value):
    model, corpus = tiny_assets
    fake_run(tiny_assets, tmp_path / "a")
    assert main(argv(model, corpus, tmp_path / "a", "--resume", flag, value)) == 2
    assert f"different {flag} than" in one_line(capsys)


def test_a_changed_epoch_based_ramp_is_refused_on_resume_and_an_ignored_one_is_not(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    run = tmp_path / "a"
    fake_run(tiny_assets, run)
    cfg = json.loads((run / "run_config.json").read_text())
    (run / "run_config.json").write_text(json.dumps({**cfg, "warmup_steps": None}))  # ramp from --warmup_epochs
    by_epochs = without(argv(model, corpus, run, "--resume"), "--warmup_steps")
    assert main([*by_epochs, "--warmup_epochs", "0.5"]) == 2
    assert "different --warmup_epochs than" in one_line(capsys)
    assert main([*argv(model, corpus, run, "--resume")]) == 2  # --warmup_steps given now, not then
    assert "different --warmup_steps than" in one_line(capsys)
    (run / "run_config.json").write_text(json.dumps(cfg))
    # --warmup_epochs does nothing next to --warmup_steps: a change is not refused for it (then the
    # fake checkpoint is: its plan ends at step 8, this resume at 6)
    assert main(argv(model, corpus, run, "--resume", "--warmup_epochs", "0.5", "--max_steps", "6")) == 2
    assert "--max_steps 6" in one_line(capsys)


# ---- 4. an extension continues the finished schedule ---------------------------------------------


class _Pruner:
    """What PruningSchedule drives: a config, its method's spec, set_step, set_sparsity, set_tau, a JSON state."""

    spec = registry.get("pdp")

    def __init__(self, cfg):
        self.config, self.sparsity, self.tau, self.steps = cfg, 0.0, None, 0

    def set_step(self, step):
        self.steps = step

    def set_sparsity(self, s):
        self.sparsity = s

    def set_tau(self, t):
        self.tau = t

    def state_dict(self):
        return {"sparsity": self.sparsity}

    def load_state_dict(self, state):
        self.sparsity = state["sparsity"]


def test_a_longer_schedule_loaded_from_a_finished_one_stays_at_the_target():
    cfg = pdp_gpt2.PDPConfig(sparsity=0.9, tau=0.1, tau_schedule="exp", tau_final=0.001)
    old = pdp_gpt2.PruningSchedule(_Pruner(cfg), 30)  # ramp 15, tau annealed over steps 15..30
    old.apply(30)
    state = json.loads(json.dumps(old.state_dict()))
    longer = pdp_gpt2.PruningSchedule(_Pruner(cfg), 60)  # planned alone: ramp 30, tau over 30..60
    longer.load_state_dict(state)
    seen = []
    for _ in range(30):
        longer.step()
        seen.append((longer.steps, longer.pruner.sparsity, longer.pruner.tau))
    assert seen == [(s, 0.9, 0.001) for s in range(31, 61)]
    assert longer.state_dict()["schedule"] | {"total_steps": None} == {
        "total_steps": None, "ramp_steps": 15, "kind": "cubic", "tau_schedule": "exp", "tau_final": 0.001,
        "tau_start": 15, "tau_end": 30}


def test_a_schedule_cut_shorter_than_its_plan_is_refused():
    cfg = pdp_gpt2.PDPConfig(sparsity=0.9, tau=0.1, tau_schedule="exp", tau_final=0.001)
    old = pdp_gpt2.PruningSchedule(_Pruner(cfg), 30)
    old.apply(10)
    with pytest.raises(ValueError, match="planned to end at step 30"):
        pdp_gpt2.PruningSchedule(_Pruner(cfg), 20).load_state_dict(old.state_dict())


@pytest.mark.parametrize("start", [8, 4])  # extend a finished run, or one still annealing tau
def test_trainer_extension_continues_the_planned_sparsity_and_tau(tmp_path, start):
    from transformers import Trainer

    cfg = pdp_gpt2.PDPConfig(sparsity=0.75, tau=0.1, tau_schedule="exp", tau_final=0.001)
    out = tmp_path / "run"
    Trainer(model=model_with_dropout(), args=targs(out, 8), train_dataset=Blocks(),  # ramp 6 of 8, tau over 6..8
            callbacks=[pdp_gpt2.PruningCallback(cfg, ramp_fraction=0.75)]).train()
    rec = recorder()
    t = Trainer(model=model_with_dropout(), args=targs(out, 16), train_dataset=Blocks(),
                callbacks=[pdp_gpt2.PruningCallback(cfg, ramp_fraction=0.75), rec])  # alone: ramp 12, tau 12..16
    t.train(resume_from_checkpoint=str(out / f"checkpoint-{start}"))
    planned = [(s, pdp_gpt2.sparsity_at("cubic", s, 0.75, 6), pdp_gpt2.tau_at("exp", s, 0.1, 0.001, 6, 8))
               for s in range(start + 1, 17)]
    assert [(r["step"], r["sparsity"], r["tau"]) for r in rec.logs] == planned
    assert planned[-8:] == [(s, 0.75, 0.001) for s in range(9, 17)]  # past the first run's end: target, tau_final
    plan = json.loads((out / "checkpoint-16" / STATE_FILE).read_text())["schedule"]
    assert (plan["total_steps"], plan["ramp_steps"], plan["tau_start"], plan["tau_end"]) == (16, 6, 6, 8)


def test_resume_that_ends_before_the_planned_schedule_is_refused(tiny_assets, tmp_path, capsys):
    model, corpus = tiny_assets
    fake_run(tiny_assets, tmp_path / "a")
    assert main(argv(model, corpus, tmp_path / "a", "--resume", "--max_steps", "6")) == 2
    err = one_line(capsys)
    assert "--max_steps 6" in err and "step 8" in err and "--max_steps 8 or more" in err, err


# ---- a. an explicit ramp longer than an epoch-based run; b. task names for library callers --------


def test_warmup_steps_longer_than_an_epoch_based_run_is_refused():
    from pdp_gpt2.train.config import TrainConfig
    from pdp_gpt2.train.steps import plan_steps

    cfg = TrainConfig(num_epochs=1, batch_size=2, warmup_steps=100)
    assert plan_steps(40, TrainConfig(num_epochs=1, batch_size=2, warmup_steps=20), 1) == (20, 20)
    with pytest.raises(UsageError, match=r"--warmup_steps 100 is longer than the run \(20 steps"):
        plan_steps(40, cfg, 1)


def test_library_run_checks_task_names_before_the_model_loads(tiny_assets, tmp_path, monkeypatch):
    from pdp_gpt2.data import lmeval, models
    from pdp_gpt2.train.config import TrainConfig
    from pdp_gpt2.train.run import run

    class TaskManager:
        def __init__(self, include_path=None, include_defaults=True):
            self.all_tasks = ["hellaswag"]

    fake = {n: types.ModuleType(n) for n in ("lm_eval", "lm_eval.models", "lm_eval.models.huggingface", "lm_eval.tasks")}
    fake["lm_eval.models.huggingface"].HFLM, fake["lm_eval.tasks"].TaskManager = object, TaskManager
    for name, mod in fake.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(models, "load_model_and_tokenizer", lambda *a, **k: pytest.fail("model loaded first"))
    lmeval._task_manager.cache_clear()
    try:
        model, corpus = tiny_assets
        cfg = TrainConfig(model=str(model), dataset=str(corpus), output_dir=str(tmp_path / "r"), eval_tasks="hellaswagg")
        with pytest.raises(UsageError, match="unknown lm-eval task"):
            run(cfg)
    finally:
        lmeval._task_manager.cache_clear()
    assert not (tmp_path / "r").exists()


# ---- 5. the loss in metrics.jsonl: the same window as Trainer's, carried across a resume ----------


def test_the_logged_loss_is_trainers_own_and_its_window_survives_a_resume(tmp_path):
    from transformers import TrainerCallback

    from pdp_gpt2.train import metrics_log
    from pdp_gpt2.train.hf_trainer import RunMetrics, RunTrainer

    class SaveAt(TrainerCallback):  # what the guard does on a signal: save this step, stop
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 5:
                control.should_save = control.should_training_stop = True

    def train(out, extra=(), resume_from=None):
        out.mkdir(exist_ok=True)
        saved = metrics_log.read_saved(resume_from) if resume_from else None
        metrics = MetricsLog(out / "metrics.jsonl", resume_step=checkpoint.step_of(resume_from),
                             saved=saved and saved["records"])
        rm = RunMetrics(metrics, resume_from=resume_from)
        t = RunTrainer(model=model_with_dropout(), args=targs(out, 8, logging_steps=4, save_strategy="no"),
                       train_dataset=Blocks(), callbacks=[rm.saver, rm, *extra])
        t.loss_window = rm.window
        t.train(resume_from_checkpoint=resume_from and str(resume_from))
        return t, metrics

    t, m = train(tmp_path / "a")
    trainer_losses = [(h["step"], h["loss"]) for h in t.state.log_history if "loss" in h]
    ours = [(r["step"], r["loss"]) for r in m.read()]
    if transformers_version() < (5, 0):  # Trainer logged round(loss, 4) before transformers 5; the window does not
        ours = [(step, round(loss, 4)) for step, loss in ours]
    assert ours == trainer_losses  # bit for bit Trainer's value
    assert [s for s, _ in trainer_losses] == [4, 8]

    b = tmp_path / "b"
    train(b, [SaveAt()])
    assert [r["step"] for r in MetricsLog(b / "metrics.jsonl").read()] == [4]  # no line for the signal's step 5
    _, m = train(b, resume_from=b / "checkpoint-5")
    # step 8 averages 5..8 as uninterrupted (wall times aside: no two runs share them)
    assert without_times(m.read()) == without_times(MetricsLog(tmp_path / "a" / "metrics.jsonl").read())


def test_the_last_step_is_a_log_step_and_a_checkpoint_step_is_not():
    from transformers import TrainerControl, TrainerState, TrainingArguments

    from pdp_gpt2.train.guard import RunGuard

    args = TrainingArguments(output_dir="unused", use_cpu=True, report_to="none")
    seen = []
    for step, save in ((5, True), (7, False), (8, False)):
        state, control = TrainerState(global_step=step, max_steps=8), TrainerControl(should_save=save)
        RunGuard().on_step_end(args, state, control)
        seen.append((step, control.should_save, control.should_log))
    assert seen == [(5, True, False), (7, False, False), (8, False, True)]


# ---- 6. metrics.jsonl is kept in step with the checkpoint -----------------------------------------


def test_metrics_log_is_rewritten_from_the_checkpoints_copy(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 1.25}]
    path.write_text(json.dumps(records[0]) + "\n" + json.dumps(records[1])[:9])  # step 4's line cut off
    log = MetricsLog(path, resume_step=4, saved=records)
    assert log.read() == records and path.read_text().count("\n") == 2
    log.write({"step": 6, "loss": 1.0})
    assert [r["step"] for r in MetricsLog(path).read()] == [2, 4, 6] and log.records[-1]["step"] == 6


def test_without_a_copy_the_lines_up_to_the_checkpoint_are_kept_and_a_cut_one_is_named(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"st')
    assert MetricsLog(path, resume_step=4).records == [{"step": 2}, {"step": 4}]
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n'
    assert f"{path}: dropping its cut-off last line" in one_line(capsys)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "metrics_state.json").write_text('{"records": [{"step": 2}], "loss": {"sums": [1.5]')
    from pdp_gpt2.train.metrics_log import read_saved

    assert read_saved(tmp_path / "ckpt") is None  # a damaged copy: the file's own lines, said in one line
    assert "metrics_state.json does not parse" in one_line(capsys)


# ---- 14. temporary files of the atomic writer ------------------------------------------------------


def test_leftover_temporary_files_are_removed_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / ".final.tmp").mkdir()
    (run / ".final.tmp" / "model.safetensors").write_text("half")
    for name in (".layers.md.ab12cd_3.tmp", ".summary.json.k2j3h4l5.tmp", "checkpoint-4/.pdp_state.json.zz9x8y7w.tmp"):
        (run / name).write_text("{")
    keep = ["layers.md", "notes.tmp", "checkpoint-4/optimizer.pt", ".pdp-gpt2.lock"]
    for name in keep:
        (run / name).write_text("x")
    elsewhere = tmp_path / "precious"
    elsewhere.mkdir()
    (run / ".final.old").symlink_to(elsewhere, target_is_directory=True)
    removed = rundir.remove_leftovers(run)
    assert sorted(p.name for p in removed) == [".final.old", ".final.tmp", ".layers.md.ab12cd_3.tmp",
                                               ".pdp_state.json.zz9x8y7w.tmp", ".summary.json.k2j3h4l5.tmp"]
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == sorted(["checkpoint-4", *keep])
    assert elsewhere.is_dir()  # the link went, not what it pointed to


def test_overwrite_clears_leftover_temporary_files_too(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run_config.json").write_text(json.dumps({"model": "m", "dataset": "d", "method": "pdp", "pdp": {}}))
    (run / ".layers.md.ab12cd34.tmp").write_text("half")
    rundir.clear_run(run)
    assert list(run.iterdir()) == []


# ---- 21. a malformed dense_eval.json -------------------------------------------------------------


@pytest.mark.parametrize("content", ["{", "[1]", '{"perplexity": 1.0}'])
def test_a_malformed_dense_eval_is_computed_again(tmp_path, capsys, content):
    from helpers import tiny_gpt2

    from pdp_gpt2.train.config import TrainConfig
    from pdp_gpt2.train.dense_cache import dense_perplexity
    from pdp_gpt2.train.prepare import Prepared

    out = tmp_path / "run"
    out.mkdir()
    (out / rundir.DENSE_EVAL).write_text(content)
    cfg = TrainConfig(max_length=16, progress=False)
    tokens = torch.randint(0, 128, (64,), generator=torch.Generator().manual_seed(0))
    prep = Prepared(tiny_gpt2(), None, None, tokens, out, out / "checkpoint-4")
    ppl = dense_perplexity(prep.model, prep, cfg, is_main=True)
    assert 50 < ppl < 1000
    err = one_line(capsys)
    assert str(out / rundir.DENSE_EVAL) in err and "computing it again" in err, err
    assert json.loads((out / rundir.DENSE_EVAL).read_text())["perplexity"] == ppl


# ---- slow: the CLI end to end -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ref(tiny_assets, tmp_path_factory):
    """An uninterrupted 8-step run: checkpoints 4 and 8, lines at 2, 4, 6, 8."""
    model, corpus = tiny_assets
    out = tmp_path_factory.mktemp("contract") / "ref"
    assert main(argv(model, corpus, out)) == 0
    return out


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _signal_at(monkeypatch, step: int, signum: int) -> None:
    """Deliver ``signum`` to this process at the end of optimizer step ``step`` (the guard's handler runs)."""
    from pdp_gpt2.train.guard import RunGuard

    real = RunGuard.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step and not self.signum:
            os.kill(os.getpid(), signum)
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(RunGuard, "on_step_end", on_step_end)


@pytest.mark.slow
def test_sigterm_between_log_steps_then_resume_logs_what_the_uninterrupted_run_logged(
        tiny_assets, ref, tmp_path, monkeypatch):
    model, corpus = tiny_assets
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _signal_at(m, 5, signal.SIGTERM)
        assert main(argv(model, corpus, run)) == 128 + signal.SIGTERM
    assert [p.name for p in checkpoint.checkpoints(run, complete_only=True)] == ["checkpoint-4", "checkpoint-5"]
    assert [r["step"] for r in MetricsLog(run / "metrics.jsonl").read()] == [2, 4]
    assert main(argv(model, corpus, run, "--resume")) == 0
    same_weights(ref, run)
    assert MetricsLog(run / "metrics.jsonl").read() == MetricsLog(ref / "metrics.jsonl").read()


@pytest.mark.slow
def test_a_cut_off_last_line_is_recreated_from_the_checkpoint(tiny_assets, ref, tmp_path, capsys):
    model, corpus = tiny_assets
    run = killed_copy(ref, tmp_path / "run")
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:12])  # step 8's line, cut off
    assert main(argv(model, corpus, run, "--resume")) == 0
    assert metrics.read_text() == (ref / "metrics.jsonl").read_text()


@pytest.mark.slow
def test_a_kill_as_final_appears_leaves_no_temporary_file_after_resume(tiny_assets, ref, tmp_path):
    model, corpus = tiny_assets
    run = killed_copy(ref, tmp_path / "run")
    shutil.copytree(ref / "final", run / "final")  # final/ renamed into place, then SIGKILL
    (run / ".layers.md.x1y2z3w4.tmp").write_text("| layer")
    (run / "checkpoint-8" / ".pdp_state.json.a1b2c3d4.tmp").write_text("{")
    assert main(argv(model, corpus, run, "--resume")) == 0
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == \
        sorted(str(p.relative_to(ref)) for p in ref.rglob("*"))


@pytest.mark.slow
def test_extending_a_finished_run_continues_its_schedule(tiny_assets, ref, tmp_path):
    model, corpus = tiny_assets
    longer = tmp_path / "longer"  # a finished run is extended into a new directory from its last checkpoint
    assert main(argv(model, corpus, longer, "--resume", str(ref / "checkpoint-8"), "--max_steps", "12")) == 0
    lines = MetricsLog(longer / "metrics.jsonl").read()
    assert lines[:4] == MetricsLog(ref / "metrics.jsonl").read()
    assert [(r["step"], r["sparsity_target"], r["tau"]) for r in lines[4:]] == [(10, 0.75, 0.001), (12, 0.75, 0.001)]
    s = json.loads((longer / "summary.json").read_text())
    assert (s["train_steps"], s["ramp_steps"], s["config"]["max_steps"]) == (12, 4, 12)


@pytest.mark.slow
def test_ctrl_c_twice_while_saving_is_exit_130_one_line_and_no_half_checkpoint(tiny_assets, tmp_path, monkeypatch,
                                                                               capsys):
    from pdp_gpt2.pdp import callback as cb_module

    model, corpus = tiny_assets
    run = tmp_path / "run"
    real = cb_module.write_checkpoint_state

    def second_ctrl_c(args, state, payload):  # the files of checkpoint-5 are written, its marker not yet
        if state.global_step == 5:
            os.kill(os.getpid(), signal.SIGINT)
        return real(args, state, payload)

    _signal_at(monkeypatch, 5, signal.SIGINT)
    monkeypatch.setattr(cb_module, "write_checkpoint_state", second_ctrl_c)
    capsys.readouterr()
    try:
        rc = main(argv(model, corpus, run))
    except KeyboardInterrupt:
        rc = "KeyboardInterrupt"
    assert rc == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err) and len(err) == 2, err  # the notice of the first Ctrl-C, then this
    assert err[-1] == (f"pdp-gpt2 train: aborted by a second SIGINT after step 5, without saving; the newest "
                       f"checkpoint is {run / 'checkpoint-4'}; continue with --resume")
    assert [p.name for p in run.iterdir() if p.name.startswith(("checkpoint", ".checkpoint"))] == ["checkpoint-4"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
