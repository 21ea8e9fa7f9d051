"""W&B: offline with no API key, never waits on stdin, never imported when off."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT


def _argv(tiny_assets, out, *extra):
    model_dir, corpus = tiny_assets
    return ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "2", "--batch_size", "4", "--max_length", "32", "--progress", "false", *extra]


def _env(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path / "home")  # no ~/.netrc with a key
    env.pop("NETRC", None)
    return env


@pytest.mark.slow  # a training run in a fresh interpreter
def test_wandb_without_key_goes_offline_and_does_not_block(tmp_path, tiny_assets):
    pytest.importorskip("wandb")
    out = tmp_path / "run"
    code = f"import sys; from pdp_gpt2.cli import main; sys.exit(main({_argv(tiny_assets, out, '--use_wandb')!r}))"
    r = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300, env=_env(tmp_path), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "no API key found; logging offline" in r.stderr
    assert list((out / "wandb").glob("offline-run-*")), "an offline W&B run directory is written"
    assert json.loads((out / "summary.json").read_text())["train_steps"] == 2


@pytest.mark.slow  # a training run in a fresh interpreter (sys.modules must start empty)
def test_wandb_not_imported_without_flag(tmp_path, tiny_assets):
    out = tmp_path / "run"
    code = (f"import sys; from pdp_gpt2.cli import main; rc = main({_argv(tiny_assets, out)!r}); "
            "print('WANDB_IMPORTED' if 'wandb' in sys.modules else 'WANDB_NOT_IMPORTED'); sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                       timeout=300, env=_env(tmp_path), cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "WANDB_NOT_IMPORTED" in r.stdout
