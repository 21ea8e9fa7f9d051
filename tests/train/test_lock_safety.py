"""The run lock never writes through what someone planted at its path: a symlink
is not followed (its target was overwritten with the lock's JSON), and a directory, a FIFO or a
link are each refused in one line naming the path, exit 2, before anything is written."""
import json
import os

import pytest

from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train import runlock


def _plant(out, kind, tmp_path):
    """A non-regular thing at out/.pdp-gpt2.lock; returns the victim file a symlink points to (or None)."""
    lock = out / runlock.LOCK_FILE
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    if kind == "symlink":
        lock.symlink_to(victim)
    elif kind == "dangling symlink":
        lock.symlink_to(tmp_path / "nowhere.txt")
    elif kind == "directory":
        lock.mkdir()
        (lock / "inside.txt").write_text("mine\n")
    elif kind == "fifo":
        os.mkfifo(lock)
    return victim


KINDS = ["symlink", "dangling symlink", "directory", "fifo"]


@pytest.mark.parametrize("kind", KINDS)
def test_lock_refuses_a_non_regular_file(tmp_path, kind):
    out = tmp_path / "run"
    out.mkdir()
    victim = _plant(out, kind, tmp_path)
    with pytest.raises(UsageError, match="not a regular file") as e:
        runlock.RunLock(out).acquire()
    assert str(out / runlock.LOCK_FILE) in str(e.value) and "\n" not in str(e.value)
    assert victim.read_text() == "precious\n"  # never written through the link
    assert not (tmp_path / "nowhere.txt").exists()  # nor created at a dangling link's target
    assert os.path.lexists(out / runlock.LOCK_FILE)  # what was planted stays: not ours to delete


@pytest.mark.parametrize("kind", KINDS)
def test_train_with_a_planted_lock_is_one_line_and_writes_nothing(tiny_assets, tmp_path, capsys, kind):
    model, corpus = tiny_assets
    out = tmp_path / "run"
    out.mkdir()
    victim = _plant(out, kind, tmp_path)
    argv = ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "2", "--warmup_steps", "1", "--batch_size", "2", "--max_length", "32", "--progress", "false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a regular file" in err and runlock.LOCK_FILE in err, err
    assert victim.read_text() == "precious\n"
    assert [p.name for p in out.iterdir()] == [runlock.LOCK_FILE]  # nothing else written


def test_a_regular_stale_lock_is_still_taken_over(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / runlock.LOCK_FILE).write_text(json.dumps({"pid": 2 ** 22 + 1, "host": runlock.hostname()}))
    with runlock.RunLock(out) as lock:
        assert lock.inherited
        assert json.loads((out / runlock.LOCK_FILE).read_text())["pid"] == os.getpid()
    assert "stale lock" in capsys.readouterr().err and not (out / runlock.LOCK_FILE).exists()
