"""`export` on a full disk: one line naming the cause, nothing left behind, whichever writer found it
(safetensors raises its own exception type with the words in it)."""
from __future__ import annotations

import errno

import pytest

from pdp_gpt2.cli import main

from helpers import pruned_copy


@pytest.fixture
def final(tiny_assets, tmp_path):
    return pruned_copy(tiny_assets[0], tmp_path / "final")


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_safetensors_on_a_full_disk_is_one_line_and_leaves_nothing(final, tmp_path, capsys, monkeypatch):
    import safetensors.torch
    from safetensors import SafetensorError

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    out = tmp_path / "exp"
    capsys.readouterr()
    assert main(["export", str(final), "--out", str(out), "--format", "compressed"]) == 2
    err = one_line(capsys)
    assert err == f"pdp-gpt2 export: error: --out {out}: No space left on device while writing the export; " \
                  "nothing was written", err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_a_copy_on_a_full_disk_is_one_line_and_leaves_nothing(final, tmp_path, capsys, monkeypatch):
    from pdp_gpt2.export import writer

    monkeypatch.setattr(writer.shutil, "copy2", lambda src, dst: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device", str(dst))))
    out = tmp_path / "exp"
    capsys.readouterr()
    assert main(["export", str(final), "--out", str(out), "--format", "dense"]) == 2
    assert "No space left on device while writing the export" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]
