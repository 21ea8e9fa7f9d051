"""Every file a run hands over has the mode of a normally created file, 0o666 & ~umask:
safetensors writes its file 0600, so final/model.safetensors was unreadable to the rest of a group
while every other file was 0644."""
import os
import stat

import pytest
import torch
from safetensors.torch import save_file

from pdp_gpt2.atomic import atomic_dir, atomic_write_text, created_mode

from helpers import train_tiny


@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _modes(root):
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


def test_created_mode_follows_the_umask(umask):
    assert created_mode() == 0o666 & ~umask and created_mode(directory=True) == 0o777 & ~umask


def test_atomic_dir_gives_safetensors_files_the_normal_mode(tmp_path, umask):
    def write(tmp):
        tmp.mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "model.safetensors"))  # safetensors' own writer: 0600
        atomic_write_text(tmp / "README.md", "card\n")
        (tmp / "sub").mkdir()
        save_file({"w": torch.zeros(2)}, str(tmp / "sub" / "x.safetensors"))

    atomic_dir(tmp_path / "final", write)
    modes = _modes(tmp_path / "final")
    assert modes == {".": 0o777 & ~umask, "sub": 0o777 & ~umask, "model.safetensors": 0o666 & ~umask,
                     "README.md": 0o666 & ~umask, "sub/x.safetensors": 0o666 & ~umask}


def test_a_saved_checkpoint_gets_the_normal_mode(tmp_path, umask):
    import json
    import types

    from pdp_gpt2.names import STATE_FILE
    from pdp_gpt2.train.hf_trainer import RecordCheckpointFiles

    ckpt = tmp_path / "checkpoint-4"
    ckpt.mkdir(mode=0o700)
    save_file({"w": torch.zeros(2)}, str(ckpt / "model.safetensors"))  # 0600, as Trainer's save leaves it
    (ckpt / STATE_FILE).write_text(json.dumps({"steps": 4}))
    args = types.SimpleNamespace(output_dir=str(tmp_path), should_save=True)
    RecordCheckpointFiles().on_save(args, types.SimpleNamespace(global_step=4), None)
    assert _modes(ckpt) == {".": 0o777 & ~umask, "model.safetensors": 0o666 & ~umask, STATE_FILE: 0o666 & ~umask}


@pytest.mark.slow
def test_a_finished_run_hands_over_only_normal_modes(tiny_assets, tmp_path):
    old = os.umask(0o022)
    try:
        rc, out = train_tiny(tmp_path, tiny_assets, "--save_steps", "6")
    finally:
        os.umask(old)
    assert rc == 0
    modes = _modes(out)
    assert modes["final/model.safetensors"] == modes["checkpoint-6/model.safetensors"] == 0o644
    assert {k for k, v in modes.items() if v not in (0o644, 0o755)} == set(), modes
