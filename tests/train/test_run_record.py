"""What a run records is what it did: a precision it would not use is refused, a cached dense
perplexity that is no perplexity is computed again, train_seconds is the whole training time
across resumes, and --resume of a run directory says what is wrong."""
from __future__ import annotations

import json
import math
import shutil
import types
from pathlib import Path

import pytest
import torch

from pdp_gpt2.cli import main
from pdp_gpt2.names import STATE_FILE
from pdp_gpt2.train import rundir
from pdp_gpt2.train import dense_cache
from pdp_gpt2.train.prepare import Prepared
from pdp_gpt2.train.config import TrainConfig

from helpers import killed_copy, train_tiny


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def tiny_argv(tiny_assets, out, *extra):
    model_dir, corpus = tiny_assets
    return ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "2", "--max_length", "32", "--progress", "false", *extra]


# ---- --precision fp16 without a GPU ------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 runs on a CUDA GPU")
def test_fp16_without_a_gpu_is_refused_before_any_work(tiny_assets, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(tiny_argv(tiny_assets, out, "--precision", "fp16")) == 2
    err = one_line(capsys)
    assert "--precision fp16" in err and "GPU" in err, err
    assert not out.exists() or not any(out.iterdir())  # no run_config.json saying fp16


# ---- dense_eval.json -------------------------------------------------------------------------------

@pytest.mark.parametrize("cached", [float("nan"), -5.0, 0.5, float("inf"), "12", None])
def test_a_cached_dense_perplexity_that_is_no_perplexity_is_computed_again(tmp_path, monkeypatch, capsys, cached):
    cfg = TrainConfig(model="m", dataset="d.txt", max_length=32)
    tokens = torch.arange(100)
    prep = Prepared(None, None, None, tokens, tmp_path, resume_from=tmp_path / "checkpoint-4")
    key = {"model": "m", "dataset": "d.txt", "eval_split": cfg.eval_split, "window": 32, "stride": cfg.stride,
           "eval_tokens": 100}
    (tmp_path / rundir.DENSE_EVAL).write_text(json.dumps({"perplexity": cached, "key": key}))
    monkeypatch.setattr(dense_cache, "evaluate", lambda *a, **k: 42.0)
    assert dense_cache.dense_perplexity(None, prep, cfg, is_main=True) == 42.0
    assert "computing it again" in capsys.readouterr().err
    assert json.loads((tmp_path / rundir.DENSE_EVAL).read_text())["perplexity"] == 42.0


def test_a_valid_cached_dense_perplexity_is_read_back(tmp_path, monkeypatch):
    cfg = TrainConfig(model="m", dataset="d.txt", max_length=32)
    prep = Prepared(None, None, None, torch.arange(100), tmp_path, resume_from=tmp_path / "checkpoint-4")
    key = {"model": "m", "dataset": "d.txt", "eval_split": cfg.eval_split, "window": 32, "stride": cfg.stride,
           "eval_tokens": 100}
    (tmp_path / rundir.DENSE_EVAL).write_text(json.dumps({"perplexity": 1.5, "key": key}))
    monkeypatch.setattr(dense_cache, "evaluate", lambda *a, **k: pytest.fail("evaluated again"))
    assert dense_cache.dense_perplexity(None, prep, cfg, is_main=True) == 1.5


# ---- train_seconds across resumes ------------------------------------------------------------------

def test_each_checkpoint_records_the_training_time_so_far(tmp_path):
    from pdp_gpt2.train.hf_trainer import RecordCheckpointFiles, TrainClock

    clock = TrainClock(before=100.0)
    clock.on_train_begin(None, None, None)
    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir()
    (ckpt / "model.safetensors").write_bytes(b"x")
    (ckpt / STATE_FILE).write_text(json.dumps({"steps": 4}))
    args = types.SimpleNamespace(output_dir=str(tmp_path), should_save=True)
    RecordCheckpointFiles(clock).on_save(args, types.SimpleNamespace(global_step=4), None)
    state = json.loads((ckpt / STATE_FILE).read_text())
    assert 100.0 <= state["train_seconds"] < 160.0 and state["checkpoint_files"] == {"model.safetensors": 1}


def test_the_closing_line_says_when_the_time_is_unknown(capsys):
    from pdp_gpt2.train.summary import print_table

    print_table({"method": "pdp", "model": "m", "dataset": "d", "train_steps": 20, "train_seconds": None,
                 "eval_split": "test", "perplexity_dense": 2.0, "perplexity_soft": 3.0, "perplexity": 3.0,
                 "sparsity_target": 0.5, "sparsity_actual": 0.5, "target_weights": 10, "final_dir": "f"})
    first = capsys.readouterr().out.splitlines()[0]
    assert "(20 steps, training time unknown" in first, first


@pytest.mark.slow  # two tiny CLI runs
def test_a_resumed_run_records_the_whole_training_time(tiny_assets, tmp_path, capsys):
    rc, ref = train_tiny(tmp_path, tiny_assets, "--save_steps", "6")
    assert rc == 0
    run = killed_copy(ref, tmp_path / "killed")
    for step, seconds in ((6, 1000.0), (12, 2000.0)):  # what the first segment recorded, made large to tell apart
        state = json.loads((run / f"checkpoint-{step}" / STATE_FILE).read_text())
        assert 0 < state["train_seconds"] < 1000
        (run / f"checkpoint-{step}" / STATE_FILE).write_text(json.dumps({**state, "train_seconds": seconds}))
    shutil.rmtree(run / "checkpoint-12")  # resume at step 6: six steps left to train
    capsys.readouterr()
    rc, _ = train_tiny(tmp_path, tiny_assets, "--save_steps", "6", "--resume", "--output_dir", str(run))
    assert rc == 0
    summary = json.loads((run / "summary.json").read_text())
    assert 1000.0 < summary["train_seconds"] < 1600.0
    assert json.loads((run / "checkpoint-12" / STATE_FILE).read_text())["train_seconds"] > 1000.0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("pdp-gpt2: "))
    assert f"(12 steps, {summary['train_seconds']:.0f} s)" in line, line


# ---- --resume RUN (a run directory, not a checkpoint) ------------------------------------------------

def _run_dir(root: Path) -> Path:
    (root / "checkpoint-4").mkdir(parents=True)
    for name in ("trainer_state.json", STATE_FILE):
        (root / "checkpoint-4" / name).write_text(json.dumps({"global_step": 4}))
    (root / "run_config.json").write_text("{}")
    return root


def test_resume_of_a_run_directory_names_its_checkpoint(tmp_path, tiny_assets, capsys):
    run = _run_dir(tmp_path / "run")
    new = tmp_path / "new"
    assert main(tiny_argv(tiny_assets, new, "--resume", str(run))) == 2
    err = one_line(capsys)
    assert "is a run directory, not a checkpoint" in err and str(run / "checkpoint-4") in err, err
    assert "killed while saving" not in err and "incomplete" not in err
    assert not new.exists() or not any(new.iterdir())


def test_resume_of_a_directory_that_is_no_checkpoint_says_so(tmp_path):
    from pdp_gpt2.errors import UsageError

    (tmp_path / "notes").mkdir()
    with pytest.raises(UsageError, match="is not a checkpoint directory") as e:
        rundir.check_output_dir(tmp_path / "new", overwrite=False, resume=str(tmp_path / "notes"))
    assert "killed while saving" not in str(e.value)
