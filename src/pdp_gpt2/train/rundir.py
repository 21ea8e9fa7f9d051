"""The run directory: what may be written where, and writing it so a killed run
never leaves a half-written file that looks complete.

Layout of ``--output_dir``::

    summary.json      written last, atomically: its presence means "this run finished"
    metrics.jsonl     one line per logged optimizer step
    final/            the finalized plain HF model + tokenizer (renamed into place when complete)
    layers.md         per-layer sparsity table of final/
    checkpoint-<N>/   resumable Trainer checkpoints (+ pdp_state.json, written last)
    dense_eval.json   the dense perplexity, computed once (a resumed run reads it back)

Trainer writes ``checkpoint-<N>/`` file by file in place (transformers 5.x), so a
run killed mid-save leaves a directory that looks like a checkpoint.  ``pdp_state.json``
is written atomically after everything else (``PDPCallback.on_save``, after all ranks
have written their RNG files), so it marks a complete checkpoint; resume ignores the rest.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from pdp_gpt2.atomic import atomic_dir, atomic_write_json, atomic_write_text  # noqa: F401  (run files use them)
from pdp_gpt2.errors import UsageError

RUN_MARKERS = ("summary.json", "metrics.jsonl", "run_config.json")
DENSE_EVAL = "dense_eval.json"
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
PDP_STATE = "pdp_state.json"  # the last file of a checkpoint: its presence marks it complete
CHECKPOINT_NEEDS = ("trainer_state.json", PDP_STATE)


def checkpoints(output_dir: Path, *, complete_only: bool = False) -> list[Path]:
    """checkpoint-<N> directories, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found) if not complete_only or is_complete(p)]


def is_complete(checkpoint: Path) -> bool:
    return all((checkpoint / name).is_file() for name in CHECKPOINT_NEEDS)


def step_of(checkpoint: Path | None) -> int | None:
    m = CHECKPOINT.match(checkpoint.name) if checkpoint is not None else None
    return int(m.group(1)) if m else None


def drop_incomplete_checkpoints(output_dir: Path) -> list[Path]:
    """Remove checkpoint dirs a killed run left half-written (the resumed run writes them again)."""
    dropped = [p for p in checkpoints(output_dir) if not is_complete(p)]
    for p in dropped:
        trash = p.with_name(f".{p.name}.incomplete")
        shutil.rmtree(trash, ignore_errors=True)
        os.replace(p, trash)  # rename first: a second kill mid-rmtree leaves no checkpoint-<N> behind
        shutil.rmtree(trash, ignore_errors=True)
    return dropped


def check_output_dir(output_dir: Path, *, overwrite: bool, resume: str | None) -> Path | None:
    """Refuse to clobber another run.  Returns the checkpoint to resume from, if any.

    Called before anything is created, so a refused run leaves the directory as it was.
    """
    if resume:
        if resume != "latest":
            ckpt = Path(resume)
            if not ckpt.is_dir():
                raise UsageError(f"--resume {resume}: no such checkpoint directory")
            if not is_complete(ckpt):
                missing = ", ".join(n for n in CHECKPOINT_NEEDS if not (ckpt / n).is_file())
                raise UsageError(f"--resume {resume}: incomplete checkpoint (no {missing}; the run was "
                                 "killed while saving it); pass --resume alone to use the latest complete one")
            return ckpt
        found = checkpoints(output_dir, complete_only=True)
        if not found:
            raise UsageError(f"--resume: no complete checkpoint-<step> directory in {output_dir}")
        return found[-1]
    if output_dir.exists():
        if not output_dir.is_dir():
            raise UsageError(f"--output_dir {output_dir} exists and is not a directory")
        if any(output_dir.iterdir()) and not overwrite:
            raise UsageError(
                f"--output_dir {output_dir} already holds files (another run?); "
                "pass --overwrite_output_dir to replace it or --resume to continue it"
            )
    return None


def clear_run(output_dir: Path) -> None:
    """With --overwrite_output_dir: remove the previous run's files (only ours)."""
    for name in (*RUN_MARKERS, DENSE_EVAL, "final", ".final.tmp", "layers.md", "plots"):
        p = output_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in checkpoints(output_dir):
        shutil.rmtree(p)


class MetricsLog:
    """Append-only metrics.jsonl with one line per step, also across resumes."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            kept = [ln for ln in path.read_text().splitlines() if ln.strip() and json.loads(ln)["step"] <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(ln) for ln in self.path.read_text().splitlines() if ln.strip()]
