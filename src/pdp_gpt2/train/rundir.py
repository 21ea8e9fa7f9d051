"""The run directory: what may be written where, and refusing to clobber another run.

Layout of ``--output_dir``::

    summary.json      written last, atomically: its presence means "this run finished"
    metrics.jsonl     one line per logged optimizer step (metrics_log.py)
    final/            the finalized plain HF model + tokenizer (renamed into place when complete)
    layers.md         per-layer sparsity table of final/
    checkpoint-<N>/   resumable Trainer checkpoints (+ pdp_state.json, written last: checkpoint.py)
    dense_eval.json   the dense perplexity, computed once (a resumed run reads it back)
    .pdp-gpt2.lock    held while a run writes here (runlock.py)
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.checkpoint import (CHECKPOINT, CHECKPOINT_NEEDS, checkpoint_damage, checkpoints, is_complete,
                                       usable_checkpoint)
from pdp_gpt2.train.runlock import LOCK_FILE, active_claim

RUN_MARKERS = ("summary.json", "metrics.jsonl", "run_config.json")
DENSE_EVAL = "dense_eval.json"


def check_output_dir(output_dir: Path, *, overwrite: bool, resume: str | None) -> Path | None:
    """Refuse to clobber another run.  Returns the checkpoint to resume from, if any.

    Called before anything is written (only the lock exists), so a refused run leaves the
    directory as it was.
    """
    if resume:
        if (output_dir / "summary.json").is_file():
            raise UsageError(f"--resume: the run in {output_dir} has finished (it has summary.json); "
                             "nothing to resume (to train it further, delete its summary.json first)")
        if resume != "latest":
            ckpt = Path(resume)
            if not ckpt.is_dir():
                raise UsageError(f"--resume {resume}: no such checkpoint directory")
            if not CHECKPOINT.match(ckpt.name) and not any((ckpt / n).exists() for n in CHECKPOINT_NEEDS):
                raise UsageError(not_a_checkpoint(ckpt, resume))
            if not is_complete(ckpt):
                missing = ", ".join(n for n in CHECKPOINT_NEEDS if not (ckpt / n).is_file())
                raise UsageError(f"--resume {resume}: incomplete checkpoint (no {missing}; the run was "
                                 "killed while saving it); pass --resume alone to use the latest complete one")
            if (why := checkpoint_damage(ckpt)) is not None:
                raise UsageError(f"--resume {resume}: damaged checkpoint ({why}); "
                                 "pass --resume alone to use the latest usable one")
            # Into another directory (a fork, e.g. to extend a finished run and keep it): only an
            # empty one, or the resumed run would rewrite another run's metrics and config.
            if (output_dir.resolve() != ckpt.parent.resolve() and output_dir.is_dir()
                    and any(p.name != LOCK_FILE for p in output_dir.iterdir())):
                raise UsageError(f"--resume {resume} --output_dir {output_dir}: {output_dir} already holds files "
                                 f"(another run?); continue in {ckpt.parent} or into an empty directory")
            return ckpt
        found = checkpoints(output_dir, complete_only=True)
        if not found:
            raise UsageError(f"--resume: no complete checkpoint-<step> directory in {output_dir}")
        return usable_checkpoint(found, output_dir)
    if output_dir.exists():
        if not output_dir.is_dir():
            raise UsageError(f"--output_dir {output_dir} exists and is not a directory")
        if any(p.name != LOCK_FILE for p in output_dir.iterdir()):
            if not overwrite:
                raise UsageError(
                    f"--output_dir {output_dir} already holds files (another run?); "
                    "pass --overwrite_output_dir to replace it or --resume to continue it"
                )
            if not is_our_run(output_dir):
                raise UsageError(f"--overwrite_output_dir: {output_dir} holds no pdp-gpt2 run (no run_config.json "
                                 "written by pdp-gpt2, no lock of one); refusing to delete anything in it")
    return None


def not_a_checkpoint(path: Path, resume: str) -> str:
    """Why ``--resume PATH`` is refused when PATH is no checkpoint-<N> directory (a run directory, most often)."""
    found = checkpoints(path, complete_only=True)
    if not found and not any((path / n).exists() for n in RUN_MARKERS):
        return (f"--resume {resume} is not a checkpoint directory (no trainer_state.json, no {CHECKPOINT_NEEDS[1]}, "
                "not named checkpoint-<N>); pass a run's checkpoint-<N> directory")
    which = str(found[-1]) if found else "<its checkpoint-N>"
    latest = f"its latest complete checkpoint is {found[-1].name}" if found else "it holds no complete checkpoint"
    return (f"--resume {resume} is a run directory, not a checkpoint ({latest}); pass --resume {which}, "
            f"or --output_dir {path} --resume to continue that run in place")


def is_our_run(output_dir: Path) -> bool:
    """A run marker: run_config.json as pdp-gpt2 writes it, or the lock a killed run of ours left."""
    claimed = active_claim(output_dir)
    if claimed is not None and claimed.inherited:
        return True
    try:
        cfg = json.loads((output_dir / "run_config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and {"model", "dataset", "method", "pdp"} <= cfg.keys()


# Everything a run writes at the top of its directory (checkpoint-<N> dirs aside).
RUN_FILES = (*RUN_MARKERS, DENSE_EVAL, "final", ".final.tmp", ".final.old", "final.incomplete", "layers.md",
             "plots", "mask_hist.json", "wandb")


# What a kill leaves of an atomic write (atomic.py): ".<name>.<mkstemp's 8 characters>.tmp" files, and
# atomic_dir's ".final.tmp" / ".final.old"; checkpoint.py's ".checkpoint-<N>.incomplete|.damaged|.removed" trash.
TMP_FILE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
TMP_DIRS = re.compile(r"^\.(final\.(tmp|old)|checkpoint-\d+\.(incomplete|damaged|removed))$")


def leftovers(output_dir: Path) -> list[Path]:
    """Temporary files and directories a killed run left at the top of its directory or in a checkpoint."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if TMP_FILE.match(p.name) or TMP_DIRS.match(p.name)]
    for ckpt in checkpoints(output_dir):
        found += [p for p in ckpt.iterdir() if TMP_FILE.match(p.name)]
    return sorted(found)


def remove_leftovers(output_dir: Path) -> list[Path]:
    """Remove :func:`leftovers` (the resuming run holds the lock: no writer of ours is alive to own them).
    A symlink is unlinked, never followed."""
    found = leftovers(output_dir)
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def clear_run(output_dir: Path) -> None:
    """With --overwrite_output_dir: remove the previous run's files (only ours, never through a link).

    All of them are first renamed into one trash directory (a rename is atomic and moves a
    symlink itself, not what it points to); if any rename fails, the ones done are moved
    back, so the directory is either cleared or as it was, never half of each.
    """
    names = [n for n in RUN_FILES if os.path.lexists(output_dir / n)]
    names += [p.name for p in output_dir.iterdir() if CHECKPOINT.match(p.name) or TMP_FILE.match(p.name)
              or p.name.startswith((".checkpoint-", ".pdp-gpt2-cleared-"))]  # and what a kill mid-clear left
    if not names:
        return
    if not is_our_run(output_dir):
        raise UsageError(f"--overwrite_output_dir: {output_dir} holds no pdp-gpt2 run; refusing to delete anything")
    trash = Path(tempfile.mkdtemp(prefix=".pdp-gpt2-cleared-", dir=output_dir))
    moved = []
    try:
        for n in names:
            os.rename(output_dir / n, trash / n)
            moved.append(n)
    except OSError as e:
        for n in reversed(moved):
            os.rename(trash / n, output_dir / n)
        trash.rmdir()
        raise UsageError(f"--overwrite_output_dir: cannot move {e.filename}: {e.strerror}; "
                         "nothing was removed") from None
    shutil.rmtree(trash)  # rmtree unlinks symlinks inside, it never follows them
