"""A run's checkpoints: which ``checkpoint-<N>/`` directories are complete, which are
damaged, and which one a resume may use.

Trainer writes ``checkpoint-<N>/`` file by file in place (transformers 5.x), so a run killed
mid-save leaves a directory that looks like a checkpoint.  ``pdp_state.json`` is written
atomically after everything else (``PruningCallback.on_save``, after all ranks have written
their RNG files), so it marks a complete checkpoint; it also records the size of every other
file (``hf_trainer.RecordCheckpointFiles``), so a truncated file is caught before a resume
loads it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
import zipfile
from pathlib import Path

from pdp_gpt2.errors import UsageError
from pdp_gpt2.names import STATE_FILE as PDP_STATE  # the last file of a checkpoint: marks it complete
from pdp_gpt2.train.distributed import rank

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
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


FILE_SIZES = "checkpoint_files"  # key in pdp_state.json: {file name: size in bytes} of the checkpoint


def with_file_sizes(checkpoint: Path, state: dict) -> dict:
    """``state`` plus the size of every file now in the checkpoint (pdp_state.json is written last)."""
    sizes = {p.name: p.stat().st_size for p in sorted(Path(checkpoint).iterdir())
             if p.is_file() and p.name != PDP_STATE}
    return {**state, FILE_SIZES: sizes}


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


def remove_checkpoint(p: Path) -> None:
    """Remove one checkpoint directory (renamed out of the way first, like the others)."""
    _remove(p, ".removed")


def _remove(p: Path, tag: str) -> None:
    trash = p.with_name(f".{p.name}{tag}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(p, trash)  # rename first: a second kill mid-rmtree leaves no checkpoint-<N> behind
    shutil.rmtree(trash, ignore_errors=True)
