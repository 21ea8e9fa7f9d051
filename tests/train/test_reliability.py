"""Nothing lost, nothing clobbered: resume at the last step, the run lock, checkpoint
validation with fallback, safe --overwrite_output_dir, fail-before-writing, disk errors, export checksums.

One uninterrupted run (module fixture, 4 steps of 64-token blocks, checkpoints at 2 and 4) is the
reference; each test copies it, damages the copy the way a kill or a full disk would, and checks
what the next command does.  The model has dropout, so a resume that trained a different set of
steps would end with different bits.
"""
import errno
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from pdp_gpt2.cli import main
from pdp_gpt2.train import checkpoint, disk_errors, rundir, runlock
from pdp_gpt2.train.metrics_log import MetricsLog

from helpers import killed_copy, without_times

TIME_FIELDS = ("train_seconds", "eval_seconds", "finished_at", "final_dir")


@pytest.fixture(scope="module")
def setup(tiny_assets, tmp_path_factory):
    """(model_dir, corpus, reference run dir) of an uninterrupted 4-step run with dropout."""
    model_dir, corpus = tiny_assets
    root = tmp_path_factory.mktemp("reliability")
    model = root / "model"
    shutil.copytree(model_dir, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg.update(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    (model / "config.json").write_text(json.dumps(cfg))
    ref = root / "ref"
    assert main(argv(model, corpus, ref)) == 0
    return model, corpus, ref


def argv(model, corpus, out, *extra):
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "4", "--save_steps", "2", "--warmup_steps", "2", "--batch_size", "4",
            "--max_length", "64", "--log_interval", "1", "--progress", "false", "--lr_warmup_steps", "0",
            "--sparsity", "0.5", "--seed", "7", *extra]


def same_result(a: Path, b: Path) -> None:
    wa, wb = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)  # bits, not closeness
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    for s in (sa, sb):
        for k in TIME_FIELDS:
            s.pop(k)
        s["config"].pop("output_dir"), s["config"].pop("resume")
    assert sa == sb
    assert without_times(MetricsLog(a / "metrics.jsonl").read()) == without_times(MetricsLog(b / "metrics.jsonl").read())


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


# ---- 1. resume at the final step; --resume on a finished run ------------------------------------


def test_resume_from_the_final_checkpoint_trains_no_step(setup, tmp_path):
    model, corpus, ref = setup
    run = killed_copy(ref, tmp_path / "run")
    assert main(argv(model, corpus, run, "--resume")) == 0
    assert [checkpoint.step_of(p) for p in checkpoint.checkpoints(run)] == [2, 4]  # no checkpoint-5
    assert json.loads((run / "summary.json").read_text())["train_steps"] == 4
    same_result(ref, run)


def test_resume_of_a_finished_run_is_refused(setup, tmp_path, capsys):
    model, corpus, ref = setup
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    capsys.readouterr()
    assert main(argv(model, corpus, run, "--resume")) == 2
    err = one_line(capsys)
    assert "finished" in err and "summary.json" in err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


# ---- 2. the run lock ------------------------------------------------------------------------------


def test_second_run_into_a_locked_directory_is_refused(setup, tmp_path, capsys):
    model, corpus, _ = setup
    out = tmp_path / "run"
    out.mkdir()
    with runlock.RunLock(out):  # another live run (an flock held through another open file)
        capsys.readouterr()
        assert main(argv(model, corpus, out)) == 2
        err = one_line(capsys)
        assert "locked" in err and f"pid {__import__('os').getpid()}" in err
        assert sorted(p.name for p in out.iterdir()) == [runlock.LOCK_FILE]  # nothing written
    assert not out.exists() or not any(out.iterdir())


def test_lock_is_taken_before_the_first_write_and_released_at_exit(setup, tmp_path, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    seen = []
    from pdp_gpt2.train import dense_cache, run as train_run  # the run's own files: run_config.json, dense_eval.json

    real = train_run.atomic_write_json

    def spy(path, obj):
        seen.append((Path(path).name, (out / runlock.LOCK_FILE).is_file()))
        real(path, obj)

    monkeypatch.setattr(train_run, "atomic_write_json", spy)
    monkeypatch.setattr(dense_cache, "atomic_write_json", spy)
    assert main(argv(model, corpus, out, "--max_steps", "1", "--warmup_steps", "1", "--save_steps", "0")) == 0
    assert {name for name, _ in seen} >= {"run_config.json", "dense_eval.json"} and all(l for _, l in seen), seen
    assert not (out / runlock.LOCK_FILE).exists() and (out / "summary.json").is_file()


def test_stale_lock_of_a_dead_process_is_taken_over(setup, tmp_path, capsys):
    model, corpus, _ = setup
    out = tmp_path / "run"
    out.mkdir()
    # What a SIGKILLed run leaves: the lock file, but no process holding its flock.
    (out / runlock.LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 1, "host": runlock.hostname()}))
    assert main(argv(model, corpus, out, "--max_steps", "1", "--warmup_steps", "1", "--save_steps", "0")) == 0
    assert "stale lock" in capsys.readouterr().err
    assert (out / "summary.json").is_file() and not (out / runlock.LOCK_FILE).exists()


def test_stale_lock_without_flock_is_reported_with_how_to_clear_it(setup, tmp_path, capsys, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    out.mkdir()
    lock = out / runlock.LOCK_FILE
    lock.write_text(json.dumps({"pid": 2 ** 22 + 1, "host": runlock.hostname()}))

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(runlock.fcntl, "flock", no_flock)  # a filesystem without flock: O_EXCL alone
    capsys.readouterr()
    assert main(argv(model, corpus, out)) == 2
    err = one_line(capsys)
    assert "stale" in err and str(2 ** 22 + 1) in err and f"rm {lock}" in err
    assert sorted(p.name for p in out.iterdir()) == [runlock.LOCK_FILE]


# ---- 3. checkpoint validation and fallback --------------------------------------------------------


def _truncate(p: Path) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])


DAMAGES = {
    "truncated_model": lambda c: _truncate(c / "model.safetensors"),
    "truncated_optimizer": lambda c: _truncate(c / "optimizer.pt"),
    "empty_rng_state": lambda c: (c / "rng_state.pth").write_bytes(b""),
    "malformed_trainer_state": lambda c: (c / "trainer_state.json").write_text('{"global_step": 4,'),
    "malformed_pdp_state": lambda c: (c / checkpoint.PDP_STATE).write_text("{"),
}


def test_checkpoint_records_its_file_sizes(setup):
    _, _, ref = setup
    for ckpt in checkpoint.checkpoints(ref):
        sizes = json.loads((ckpt / checkpoint.PDP_STATE).read_text())[checkpoint.FILE_SIZES]
        on_disk = {p.name: p.stat().st_size for p in ckpt.iterdir() if p.name != checkpoint.PDP_STATE}
        assert sizes == on_disk and "model.safetensors" in sizes and "optimizer.pt" in sizes


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(setup, tmp_path, capsys, damage):
    model, corpus, ref = setup
    run = killed_copy(ref, tmp_path / "run")
    DAMAGES[damage](run / "checkpoint-4")
    capsys.readouterr()
    assert main(argv(model, corpus, run, "--resume")) == 0
    err = capsys.readouterr().err
    assert f"skipping damaged checkpoint {run / 'checkpoint-4'}" in err, err
    same_result(ref, run)  # steps 3 and 4 trained again from checkpoint-2: the same bits


def test_no_usable_checkpoint_is_one_line(setup, tmp_path, capsys):
    model, corpus, ref = setup
    run = killed_copy(ref, tmp_path / "run")
    DAMAGES["truncated_model"](run / "checkpoint-4")
    DAMAGES["empty_rng_state"](run / "checkpoint-2")
    capsys.readouterr()
    assert main(argv(model, corpus, run, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no usable checkpoint" in err[-1] and "Traceback" not in "\n".join(err)
    assert {p.name for p in run.iterdir()} >= {"checkpoint-2", "checkpoint-4"}  # nothing deleted


def test_cut_off_last_metrics_line_is_dropped(setup, tmp_path, capsys):
    model, corpus, ref = setup
    run = killed_copy(ref, tmp_path / "run")
    shutil.rmtree(run / "checkpoint-4")
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    metrics.write_text("\n".join(lines[:3]) + "\n" + lines[3][:10])  # disk full mid-line at step 4
    capsys.readouterr()
    assert main(argv(model, corpus, run, "--resume")) == 0
    assert "metrics.jsonl" not in capsys.readouterr().err  # rewritten from checkpoint-2's copy: nothing lost
    same_result(ref, run)


# ---- 4. safe --overwrite_output_dir ---------------------------------------------------------------


def test_overwrite_refuses_a_directory_without_a_run_marker(setup, tmp_path, capsys):
    model, corpus, _ = setup
    home = tmp_path / "home"
    (home / "final").mkdir(parents=True)
    (home / "final" / "thesis.tex").write_text("years of work")
    (home / "summary.json").write_text("{}")
    (home / "run_config.json").write_text('{"not": "ours"}')
    capsys.readouterr()
    assert main(argv(model, corpus, home, "--overwrite_output_dir")) == 2
    assert "no pdp-gpt2 run" in one_line(capsys)
    assert (home / "final" / "thesis.tex").read_text() == "years of work" and (home / "summary.json").exists()
    assert sorted(p.name for p in home.iterdir()) == ["final", "run_config.json", "summary.json"]


def test_overwrite_unlinks_symlinks_without_following_them(setup, tmp_path):
    model, corpus, ref = setup
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep")
    (run / "plots").symlink_to(elsewhere, target_is_directory=True)
    (run / "checkpoint-9").symlink_to(elsewhere, target_is_directory=True)
    assert main(argv(model, corpus, run, "--overwrite_output_dir")) == 0
    assert (elsewhere / "precious.txt").read_text() == "keep"
    assert not (run / "plots").exists() and not (run / "checkpoint-9").is_symlink()
    assert (run / "summary.json").is_file()


def test_overwrite_that_fails_midway_puts_everything_back(setup, tmp_path, monkeypatch):
    _, _, ref = setup
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))
    real, calls = rundir.os.rename, []

    def flaky(src, dst):
        calls.append(src)
        if len(calls) == 4:
            raise OSError(errno.EIO, "Input/output error", str(src))
        real(src, dst)

    monkeypatch.setattr(rundir.os, "rename", flaky)
    from pdp_gpt2 import UsageError

    with pytest.raises(UsageError, match="nothing was removed"):
        rundir.clear_run(run)
    assert len(calls) >= 4
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


# ---- 5./6. fail before writing; finite values; disk errors ----------------------------------------


@pytest.mark.parametrize("flags, needle", [
    (["--seed", "-1"], "seed"), (["--seed", str(2 ** 32)], "seed"),
    (["--lr_scheduler", "foo"], "foo"),
    (["--targets", "nomatch*"], "nomatch*"),
    (["--tau", "inf"], "tau"), (["--tau", "nan"], "tau"),
    (["--beta", "inf", "--improved_masking"], "beta"),
    (["--learning_rate", "nan"], "learning_rate"), (["--learning_rate", "inf"], "learning_rate"),
])
def test_bad_input_is_one_line_and_writes_nothing(setup, tmp_path, capsys, flags, needle):
    model, corpus, _ = setup
    out = tmp_path / "new" / "run"
    capsys.readouterr()
    assert main(argv(model, corpus, out, *flags)) == 2
    assert needle in one_line(capsys)
    assert not (tmp_path / "new").exists()  # not even the directories it created to check


def test_output_dir_that_cannot_be_created_is_one_line(setup, tmp_path, capsys):
    model, corpus, _ = setup
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file" / "run", Path("/proc/pdp-gpt2-test/run")):
        capsys.readouterr()
        assert main(argv(model, corpus, out)) == 2
        assert "--output_dir" in one_line(capsys)
    assert (tmp_path / "file").read_text() == "x"


def test_read_only_output_dir_is_one_line(setup, tmp_path, capsys, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    out.mkdir()
    real = rundir.os.open

    def read_only(path, flags, *a, **k):  # root ignores chmod, so simulate the filesystem's answer
        if Path(path).parent == out:
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real(path, flags, *a, **k)

    monkeypatch.setattr(rundir.os, "open", read_only)
    capsys.readouterr()
    assert main(argv(model, corpus, out)) == 2
    err = one_line(capsys)
    assert str(out) in err and "Read-only" in err


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_model_weights_are_one_line_in_train_eval_export(setup, tmp_path, capsys, damage):
    model, corpus, _ = setup
    bad = tmp_path / "model"
    shutil.copytree(model, bad)
    f = bad / "model.safetensors"
    _truncate(f) if damage == "truncated" else f.write_bytes(b"")
    out = tmp_path / "run"
    for cmd in (argv(bad, corpus, out),
                ["eval", "--model", str(bad), "--dataset", str(corpus), "--no_progress"],
                ["export", str(bad), "--out", str(tmp_path / "exp")]):
        capsys.readouterr()
        assert main(cmd) == 2, cmd[0]
        assert "model.safetensors" in one_line(capsys)
    assert not out.exists() and not (tmp_path / "exp").exists()


def _enospc(path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def test_disk_full_while_writing_final_is_one_line_and_not_finished(setup, tmp_path, capsys, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    from transformers import PreTrainedModel

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", lambda self, d, **k: _enospc(Path(d) / "model.safetensors"))
    capsys.readouterr()
    assert main(argv(model, corpus, out, "--save_steps", "0")) == 2
    err = one_line(capsys)
    assert "No space left" in err and "model.safetensors" in err
    assert not (out / "summary.json").exists() and not (out / "final").exists()
    assert not (out / runlock.LOCK_FILE).exists()


def test_disk_full_while_logging_is_one_line(setup, tmp_path, capsys, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    monkeypatch.setattr(MetricsLog, "write", lambda self, record: _enospc(self.path))
    capsys.readouterr()
    assert main(argv(model, corpus, out)) == 2
    err = one_line(capsys)
    assert str(out / "metrics.jsonl") in err and "No space left" in err
    assert not (out / "summary.json").exists() and not (out / "final").exists()


def test_pdp_config_refuses_non_finite_values():
    from pdp_gpt2 import PDPConfig, UsageError

    for kw in ({"tau": float("inf")}, {"tau": float("nan")}, {"beta": float("inf")}, {"beta": float("nan")}):
        with pytest.raises(UsageError):
            PDPConfig(**kw)


# ---- 7. the compressed export checksums every file --------------------------------------------------


@pytest.fixture
def exported(setup, tmp_path):
    _, _, ref = setup
    out = tmp_path / "exp"
    assert main(["export", str(ref), "--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("name", ["config.json", "tokenizer.json"])
def test_flipped_byte_in_any_exported_file_is_refused(exported, name, capsys):
    from pdp_gpt2 import UsageError
    from pdp_gpt2.export.compressed import WEIGHTS_FILE, read_compressed
    from pdp_gpt2.export.compressed_loader import load_compressed

    _, meta = read_compressed(exported / WEIGHTS_FILE)
    assert name in meta["files"] and "size_report.json" not in meta["files"]
    load_compressed(exported)  # intact: loads
    f = exported / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=name):
        load_compressed(exported)


def test_lr_scheduler_list_runs_in_transformers():
    from transformers import get_scheduler
    from transformers.trainer_utils import SchedulerType

    from pdp_gpt2.train.config import LR_SCHEDULER_SINCE, LR_SCHEDULERS, transformers_version

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    for name in LR_SCHEDULERS:
        if transformers_version() < LR_SCHEDULER_SINCE.get(name, (0, 0)):  # refused by TrainConfig (below)
            assert name not in {t.value for t in SchedulerType}
            continue
        assert SchedulerType(name).value == name
        get_scheduler(name, opt, num_warmup_steps=2, num_training_steps=10)


def test_a_scheduler_newer_than_the_installed_transformers_is_one_line(monkeypatch):
    from pdp_gpt2 import UsageError
    from pdp_gpt2.train import config

    monkeypatch.setattr(config, "transformers_version", lambda: (5, 3))
    with pytest.raises(UsageError, match=r"^lr_scheduler greedy needs transformers >= 5\.4; this is 5\.3$"):
        config.TrainConfig(lr_scheduler="greedy")
    config.TrainConfig(lr_scheduler="cosine")  # the others are unaffected
    monkeypatch.setattr(config, "transformers_version", lambda: (5, 4))
    config.TrainConfig(lr_scheduler="greedy")


def test_gmp_resume_from_the_final_checkpoint_is_bit_identical(setup, tmp_path):
    model, corpus, _ = setup  # keep-masks travel in the checkpoint's weights, not in pdp_state.json
    ref = tmp_path / "ref"
    assert main(argv(model, corpus, ref, "--method", "gmp")) == 0
    run = killed_copy(ref, tmp_path / "run")
    assert main(argv(model, corpus, run, "--method", "gmp", "--resume")) == 0
    same_result(ref, run)


def test_disk_full_behind_torch_saves_opaque_error_is_recognized(tmp_path, monkeypatch):
    # torch.save on a full disk raises RuntimeError("... unexpected pos 576 vs 534"), no errno:
    # the free space of the run directory tells what happened.
    err = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    assert disk_errors.disk_error(err, tmp_path) is None  # plenty of space here: an ordinary bug
    monkeypatch.setattr(disk_errors.shutil, "disk_usage", lambda p: SimpleNamespace(total=10, used=10, free=0))
    assert "No space left on device" in str(disk_errors.disk_error(err, tmp_path))
    assert disk_errors.disk_error(ValueError("unrelated"), tmp_path) is None


def test_disk_full_at_summary_leaves_no_finished_looking_final(setup, tmp_path, capsys, monkeypatch):
    model, corpus, _ = setup
    out = tmp_path / "run"
    from pdp_gpt2.train import summary

    real = summary.atomic_write_json
    monkeypatch.setattr(summary, "atomic_write_json",
                        lambda p, obj: _enospc(p) if Path(p).name == "summary.json" else real(p, obj))
    capsys.readouterr()
    assert main(argv(model, corpus, out, "--save_steps", "0", "--max_steps", "1", "--warmup_steps", "1")) == 2
    assert str(out / "summary.json") in one_line(capsys)
    assert not (out / "final").exists() and (out / "final.incomplete" / "model.safetensors").is_file()


def test_resume_from_the_final_checkpoint_restores_an_annealed_tau(setup, tmp_path):
    # The soft perplexity depends on tau at the last step: the no-training resume must restore it.
    model, corpus, _ = setup
    flags = ("--tau_schedule", "exp", "--tau_final", "0.002", "--warmup_steps", "1")
    ref = tmp_path / "ref"
    assert main(argv(model, corpus, ref, *flags)) == 0
    run = killed_copy(ref, tmp_path / "run")
    assert main(argv(model, corpus, run, *flags, "--resume")) == 0
    same_result(ref, run)


def test_resume_from_a_named_damaged_checkpoint_is_one_line(setup, tmp_path, capsys):
    model, corpus, ref = setup
    run = killed_copy(ref, tmp_path / "run")
    DAMAGES["empty_rng_state"](run / "checkpoint-4")
    capsys.readouterr()
    assert main(argv(model, corpus, run, "--resume", str(run / "checkpoint-4"))) == 2
    err = one_line(capsys)
    assert "damaged checkpoint" in err and "rng_state.pth" in err and "--resume alone" in err


@pytest.mark.parametrize("errno_, text", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left")])
def test_export_out_that_cannot_be_written_is_one_line(tiny_assets, tmp_path, capsys, monkeypatch, errno_, text):
    """export --out on a read-only filesystem (or a full disk): one line, exit 2, no partial directory."""
    from helpers import pruned_copy

    from pdp_gpt2.export import writer

    final = pruned_copy(tiny_assets[0], tmp_path / "final")
    real = writer.tempfile.mkdtemp

    def refuse(*a, **k):  # root ignores permissions, so simulate the filesystem's answer
        if k.get("dir") == tmp_path / "ro":
            raise OSError(errno_, text)
        return real(*a, **k)

    monkeypatch.setattr(writer.tempfile, "mkdtemp", refuse)
    (tmp_path / "ro").mkdir()
    capsys.readouterr()
    assert main(["export", str(final), "--out", str(tmp_path / "ro" / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and text in err and str(tmp_path / "ro" / "x") in err, err
    assert list((tmp_path / "ro").iterdir()) == []
    assert main(["export", str(final), "--out", "/proc/pdp-gpt2-test/x"]) == 2  # not creatable at all
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
