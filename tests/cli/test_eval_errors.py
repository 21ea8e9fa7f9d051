"""`pdp-gpt2 eval` (and the loader every command shares): what it refuses, in one line, exit 2,
before anything is evaluated or written."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from pdp_gpt2.cli import main


def _refused(capsys, argv, *needles):
    capsys.readouterr()  # what fixtures printed (transformers' load/save bars) is not ours
    assert main(argv) == 2
    cap = capsys.readouterr()
    err = cap.err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    assert "perplexity" not in cap.out  # refused before the evaluation, not after it
    return err


@pytest.fixture
def eval_argv(tiny_assets):
    model_dir, corpus = tiny_assets
    return ["eval", "--model", str(model_dir), "--dataset", str(corpus), "--no_progress", "--device", "cpu"]


@pytest.fixture
def checkpoint(tmp_path, tiny_assets):
    """run/checkpoint-2 as a training run leaves it: masked keys, pdp_state.json, no tokenizer; and run/final."""
    import pdp_gpt2
    from transformers import AutoModelForCausalLM

    model_dir, _ = tiny_assets
    run = tmp_path / "run"
    shutil.copytree(model_dir, run / "final")
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=0.5))
    model.save_pretrained(run / "checkpoint-2")
    (run / "checkpoint-2" / "pdp_state.json").write_text(json.dumps({"steps": 2}))
    return run


# ---- a training checkpoint, a directory without a tokenizer, too few tokens ------------------
def test_training_checkpoint_is_refused_pointing_at_final(capsys, eval_argv, checkpoint):
    # It printed "perplexity 2990070.757 ... over 1 tokens", exit 0: the masked weights were not
    # loaded (random ones instead) and the missing tokenizer scored 1 token.
    ckpt = checkpoint / "checkpoint-2"
    argv = eval_argv[:2] + [str(ckpt)] + eval_argv[3:]
    err = _refused(capsys, argv, "training checkpoint", f"use the finished model in {checkpoint / 'final'}")
    shutil.rmtree(checkpoint / "final")  # a run stopped before it finished: say how to finish it
    err = _refused(capsys, argv, "training checkpoint", f"--output_dir {checkpoint} --resume")


def test_training_checkpoint_is_refused_by_generate_and_train_too(capsys, checkpoint, tiny_assets, tmp_path):
    ckpt = str(checkpoint / "checkpoint-2")
    _refused(capsys, ["generate", ckpt, "--max_new_tokens", "2"], "training checkpoint")
    out = tmp_path / "out"
    _refused(capsys, ["train", "--model", ckpt, "--dataset", str(tiny_assets[1]), "--output_dir", str(out),
                      "--max_steps", "1", "--max_length", "32", "--progress", "false"], "training checkpoint")
    assert not out.exists()


def test_directory_without_tokenizer_is_refused(capsys, eval_argv, tiny_assets, tmp_path):
    # A dense run's checkpoint has plain weights but no tokenizer: transformers built an empty one.
    model_dir, _ = tiny_assets
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(model_dir / f, bare / f)
    _refused(capsys, eval_argv[:2] + [str(bare)] + eval_argv[3:], str(bare), "tokenizer")


def test_split_shorter_than_one_window_is_refused(capsys, eval_argv, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("the quick brown fox\n" * 30)  # the test split is a few lines: far below 64 tokens
    argv = [short if a == eval_argv[eval_argv.index("--dataset") + 1] else a for a in eval_argv]
    err = _refused(capsys, [str(a) for a in argv], "fewer than one window of 64", "--max_length")
    n = int(err.split(" has ")[1].split(" token")[0])
    assert 2 <= n < 64
    # with a window that fits, the same split is evaluated, over every token but the first
    assert main([str(a) for a in argv] + ["--max_length", str(n), "--stride", str(n // 2 or 1)]) == 0
    assert f"over {n - 1:,} tokens" in capsys.readouterr().out


# ---- pickled weights only ----------------------------------------------------------------------
def test_pickled_weights_are_refused_naming_safetensors(capsys, eval_argv, tiny_assets, tmp_path):
    from safetensors.torch import load_file

    model_dir, _ = tiny_assets
    pickled = tmp_path / "pickled"
    shutil.copytree(model_dir, pickled)
    (pickled / "model.safetensors").unlink()
    torch.save(load_file(model_dir / "model.safetensors"), pickled / "pytorch_model.bin")
    err = _refused(capsys, eval_argv[:2] + [str(pickled)] + eval_argv[3:], "pytorch_model.bin", "safetensors")
    assert "run code" in err


# ---- --json checked before the evaluation ------------------------------------------------------
def test_json_path_that_is_a_directory_is_refused_first(capsys, eval_argv, tmp_path):
    (tmp_path / "adir").mkdir()
    _refused(capsys, eval_argv + ["--json", str(tmp_path / "adir")], "--json", "is a directory")


def test_json_path_under_a_file_is_refused_first(capsys, eval_argv, tmp_path):
    (tmp_path / "afile").write_text("x")
    _refused(capsys, eval_argv + ["--json", str(tmp_path / "afile" / "r.json")], "--json", "afile")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_json_in_a_read_only_directory_is_refused_first(capsys, eval_argv, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _refused(capsys, eval_argv + ["--json", str(ro / "r.json")], "--json", "not writable")
    finally:
        ro.chmod(0o700)


def test_json_in_a_new_directory_is_written(capsys, eval_argv, tmp_path):
    out = tmp_path / "new" / "sub" / "r.json"
    assert main(eval_argv + ["--json", str(out)]) == 0
    assert json.loads(out.read_text())["tokens"] > 64


def test_export_without_tokenizer_is_refused(capsys, eval_argv, tmp_path):
    import pdp_gpt2
    from helpers import tiny_gpt2

    model = tiny_gpt2()
    pdp_gpt2.attach(model, pdp_gpt2.PDPConfig(sparsity=0.5)).finalize()
    model.save_pretrained(tmp_path / "pruned")  # weights only: an export made from it has no tokenizer
    # The CLI refuses to make such an export (tests/export/test_export_safety.py); the library makes
    # it with a note (load_compressed needs no tokenizer), and eval refuses the result.
    from pdp_gpt2.export.writer import export

    export(tmp_path / "pruned", tmp_path / "exp")
    _refused(capsys, eval_argv[:2] + [str(tmp_path / "exp")] + eval_argv[3:], str(tmp_path / "exp"), "tokenizer")
