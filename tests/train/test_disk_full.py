"""A full disk during a run: the checkpoint it cut short is removed (it would hold the space and look
like a checkpoint), the line names the file and what was removed, and --resume continues; a resume
that cannot even write its lock says so and names what holds space.  The full disk is simulated by
making one write raise OSError(ENOSPC)."""
from __future__ import annotations

import errno
import os

import pytest
import torch

from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train import checkpoint, runlock


def enospc(path):
    raise OSError(errno.ENOSPC, "No space left on device", str(path))


def argv(tiny_assets, out, *extra):
    model, corpus = tiny_assets
    return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out), "--max_steps", "2",
            "--save_steps", "1", "--warmup_steps", "1", "--batch_size", "2", "--max_length", "32",
            "--progress", "false", "--sparsity", "0.5", *extra]


@pytest.mark.slow
def test_disk_full_at_the_second_checkpoint_removes_it_and_resume_continues(tiny_assets, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "run"
    real = torch.save

    def save(obj, f, *a, **k):  # checkpoint-2's weights are written, then its optimizer state finds the disk full
        if "checkpoint-2" in str(f):
            enospc(f)
        return real(obj, f, *a, **k)

    with monkeypatch.context() as m:
        m.setattr(torch, "save", save)
        capsys.readouterr()
        assert main(argv(tiny_assets, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(out / "checkpoint-2") in err and "No space left on device" in err, err
    assert err.endswith("; removed checkpoint-2, cut short while saving"), err
    assert [p.name for p in out.iterdir() if "checkpoint" in p.name] == ["checkpoint-1"]
    assert checkpoint.is_complete(out / "checkpoint-1")
    assert main(argv(tiny_assets, out, "--resume")) == 0
    assert (out / "summary.json").is_file()


def test_a_resume_that_cannot_write_its_lock_names_the_disk_and_the_cut_short_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoint-10").mkdir(parents=True)  # complete
    for name in checkpoint.CHECKPOINT_NEEDS:
        (run / "checkpoint-10" / name).write_text("{}")
    (run / "checkpoint-20").mkdir()  # a save cut short by the full disk (no pdp_state.json)
    (run / "checkpoint-20" / "model.safetensors").write_bytes(b"x" * 100)
    monkeypatch.setattr(runlock.os, "pwrite", lambda fd, data, offset: enospc(run / runlock.LOCK_FILE))
    with pytest.raises(UsageError) as e:
        runlock.RunLock(run).acquire()
    assert str(e.value) == (f"--output_dir {run}: cannot write its lock file {run / runlock.LOCK_FILE}: No space left "
                            "on device (checkpoint-20 in it: incomplete, cut short while saving; deleting it frees "
                            "space); free space on that disk and run again")
    assert not os.path.exists(run / runlock.LOCK_FILE)


@pytest.mark.slow
def test_a_disk_error_inside_training_puts_the_signal_handlers_back(tiny_assets, tmp_path, monkeypatch):
    import signal

    from pdp_gpt2.train.metrics_log import MetricsLog

    monkeypatch.setattr(MetricsLog, "write", lambda self, record: enospc(self.path))
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    assert main(argv(tiny_assets, tmp_path / "run")) == 2
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
