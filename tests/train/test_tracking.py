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


class _FakeWandb:
    """Stands in for the wandb module: records what init is given, talks to no network."""

    def __init__(self):
        self.inits = []

    def Settings(self, **kw):  # noqa: N802 (wandb's spelling)
        return kw

    def init(self, **kw):
        self.inits.append(kw)
        return object()


@pytest.mark.parametrize("env_mode, mode", [(None, "offline"), ("disabled", None)])
def test_wandb_offline_is_passed_to_init_not_written_to_the_environment(tmp_path, monkeypatch, capsys,
                                                                        env_mode, mode):
    from pdp_gpt2.train import tracking

    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    for k in [k for k in os.environ if k.startswith("WANDB_")]:
        monkeypatch.delenv(k)
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc with a key
    monkeypatch.delenv("NETRC", raising=False)
    before = dict(os.environ)
    tracker = tracking.make_tracker(True, "proj", "run", {"a": 1}, tmp_path)
    assert isinstance(tracker, tracking.WandbTracker) and dict(os.environ) == before
    (init,) = fake.inits
    assert init.get("mode") == mode and init["settings"] == {"console": "off", "silent": True}
    assert ("logging offline" in capsys.readouterr().err) == (mode == "offline")
