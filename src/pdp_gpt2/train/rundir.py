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
is written atomically after everything else (``PruningCallback.on_save``, after all ranks
have written their RNG files), so it marks a complete checkpoint; resume ignores the rest.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import TrainerCallback

from pdp_gpt2.atomic import atomic_dir, atomic_write_json, atomic_write_text  # noqa: F401  (run files use them)
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.distributed import rank
from pdp_gpt2.train.runlock import LOCK_FILE, active_claim, claim, release_claims  # noqa: F401  (run.py uses them)

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
        _remove(p, ".incomplete")
    return dropped


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
            if not is_complete(ckpt):
                missing = ", ".join(n for n in CHECKPOINT_NEEDS if not (ckpt / n).is_file())
                raise UsageError(f"--resume {resume}: incomplete checkpoint (no {missing}; the run was "
                                 "killed while saving it); pass --resume alone to use the latest complete one")
            if (why := checkpoint_damage(ckpt)) is not None:
                raise UsageError(f"--resume {resume}: damaged checkpoint ({why}); "
                                 "pass --resume alone to use the latest usable one")
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


def clear_run(output_dir: Path) -> None:
    """With --overwrite_output_dir: remove the previous run's files (only ours, never through a link).

    All of them are first renamed into one trash directory (a rename is atomic and moves a
    symlink itself, not what it points to); if any rename fails, the ones done are moved
    back, so the directory is either cleared or as it was, never half of each.
    """
    names = [n for n in RUN_FILES if os.path.lexists(output_dir / n)]
    names += [p.name for p in output_dir.iterdir() if CHECKPOINT.match(p.name)
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


# ---- checkpoint validation ------------------------------------------------------------------------

FILE_SIZES = "checkpoint_files"  # key in pdp_state.json: {file name: size in bytes} of the checkpoint


def with_file_sizes(checkpoint: Path, state: dict) -> dict:
    """``state`` plus the size of every file now in the checkpoint (pdp_state.json is written last)."""
    sizes = {p.name: p.stat().st_size for p in sorted(Path(checkpoint).iterdir())
             if p.is_file() and p.name != PDP_STATE}
    return {**state, FILE_SIZES: sizes}


class RecordCheckpointFiles(TrainerCallback):
    """Adds :func:`with_file_sizes` to each checkpoint's pdp_state.json, after PruningCallback
    wrote it (the core writes the file but cannot know our run directory); atomic, still last.
    A kill between the two writes leaves a complete checkpoint checked without sizes."""

    def on_save(self, args, state, control, **kwargs):
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if args.should_save and (ckpt / PDP_STATE).is_file():
            atomic_write_json(ckpt / PDP_STATE, with_file_sizes(ckpt, json.loads((ckpt / PDP_STATE).read_text())))


def _json_dict(path: Path) -> dict:
    obj = json.loads(path.read_text())
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    return obj


def _structure(f: Path) -> str | None:
    """Why ``f`` cannot load (cheap checks of its container), or None."""
    if f.suffix == ".safetensors":
        from pdp_gpt2.data.models import safetensors_damage

        return safetensors_damage(f)
    if f.suffix in (".pt", ".pth", ".bin"):  # torch.save's zip container: the central directory is at the end
        try:
            with zipfile.ZipFile(f) as z:
                z.infolist()
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            return f"{f.name} is truncated or not a torch file ({e})"
    return None


def checkpoint_damage(checkpoint: Path) -> str | None:
    """Why a complete checkpoint cannot be resumed from, or None: its JSON parses, every file
    has the size pdp_state.json recorded, and every weight/optimizer/RNG file's container is whole."""
    ckpt = Path(checkpoint)
    try:
        state = _json_dict(ckpt / PDP_STATE)
    except (OSError, ValueError) as e:
        return f"{PDP_STATE} does not parse ({e})"
    try:
        trainer_state = _json_dict(ckpt / "trainer_state.json")
        int(trainer_state["global_step"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"trainer_state.json does not parse ({e})"
    for name, size in (state.get(FILE_SIZES) or {}).items():
        f = ckpt / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != size:
            return f"{name} has {f.stat().st_size} bytes, {size} when it was saved"
    for f in sorted(ckpt.iterdir()):
        if f.is_file() and (why := _structure(f)) is not None:
            return why
    return None


def usable_checkpoint(complete: list[Path], output_dir: Path) -> Path:
    """The newest checkpoint that passes :func:`checkpoint_damage`; each damaged newer one is named."""
    damaged = []
    for ckpt in reversed(complete):
        why = checkpoint_damage(ckpt)
        if why is None:
            return ckpt
        damaged.append(ckpt.name)
        if rank() == 0:  # every rank checks the same files; one warning is enough
            print(f"pdp-gpt2: warning: skipping damaged checkpoint {ckpt}: {why}", file=sys.stderr, flush=True)
    raise UsageError(f"--resume: no usable checkpoint in {output_dir} (damaged: {', '.join(damaged)}); "
                     "start again with --overwrite_output_dir")


def drop_unusable_checkpoints(output_dir: Path, resume_from: Path | None) -> list[Path]:
    """Incomplete checkpoints, and damaged ones newer than the one resumed from: the resumed
    run writes them again, and Trainer would otherwise write into the damaged directory."""
    after = step_of(resume_from)
    drop = [p for p in checkpoints(output_dir) if after is not None and step_of(p) > after
            and is_complete(p) and checkpoint_damage(p) is not None]
    for p in drop:
        _remove(p, ".damaged")
    return drop_incomplete_checkpoints(output_dir) + drop


def _remove(p: Path, tag: str) -> None:
    trash = p.with_name(f".{p.name}{tag}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(p, trash)  # rename first: a second kill mid-rmtree leaves no checkpoint-<N> behind
    shutil.rmtree(trash, ignore_errors=True)


def resume_without_training(trainer, checkpoint: Path | None, total_steps: int) -> bool:
    """A checkpoint at or past the planned total: load its weights and state, train no step.

    Trainer would run one more step (and save checkpoint-<N+1>); a kill during the final
    evaluation leaves exactly this state, and its rerun must end as the uninterrupted run did.
    """
    step = step_of(checkpoint)
    if step is None or step < total_steps:
        return False
    from safetensors.torch import load_file
    from transformers import TrainerState
    from transformers.trainer_callback import ProgressCallback

    model = trainer.model
    weights = load_file(str(Path(checkpoint) / "model.safetensors"))
    result = model.load_state_dict(weights, strict=False)
    loaded = {model.state_dict()[k].data_ptr() for k in weights}
    missing = [k for k in result.missing_keys if model.state_dict()[k].data_ptr() not in loaded]  # tied: fine
    if missing or result.unexpected_keys:
        raise UsageError(f"--resume {checkpoint}: its model.safetensors does not fit the model "
                         f"({len(missing)} missing, {len(result.unexpected_keys)} unexpected tensors)")
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    trainer.state.is_local_process_zero = trainer.is_local_process_zero()
    trainer.state.is_world_process_zero = trainer.is_world_process_zero()
    # The events Trainer.train sends around its loop, so callbacks see the resumed state as on
    # any resume (the pruning callback restores the checkpoint step's schedule and tau, the guard
    # installs and removes its hooks); progress bars are left out, there is no step to show.
    callbacks = [cb for cb in trainer.callback_handler.callbacks if not isinstance(cb, ProgressCallback)]
    for event in ("on_train_begin", "on_train_end"):
        for cb in callbacks:
            getattr(cb, event)(trainer.args, trainer.state, trainer.control, model=trainer.model)
    print(f"pdp-gpt2: {checkpoint} is at step {step} of {total_steps}: no training left, "
          "evaluating and writing the result", file=sys.stderr, flush=True)
    return True


class MetricsLog:
    """Append-only metrics.jsonl with one line per step, also across resumes."""

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = path
        if resume_step is not None and path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            kept = [ln for ln, rec in self._lines(warn=True) if rec["step"] <= resume_step]
            atomic_write_text(path, "".join(ln + "\n" for ln in kept))

    def _lines(self, warn: bool = False) -> list[tuple[str, dict]]:
        out = []
        lines = self.path.read_text().splitlines()
        for i, ln in enumerate(lines):
            if not ln.strip():
                continue
            try:
                rec = json.loads(ln)
                if not isinstance(rec, dict) or "step" not in rec:
                    raise ValueError("no step")
            except ValueError:
                # A full disk or a kill mid-write cuts the last line off; drop it, do not crash.
                if warn:
                    where = "its cut-off last line" if i == len(lines) - 1 else f"malformed line {i + 1}"
                    print(f"pdp-gpt2: warning: {self.path}: dropping {where}", file=sys.stderr, flush=True)
                continue
            out.append((ln, rec))
        return out

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [rec for _, rec in self._lines()]
