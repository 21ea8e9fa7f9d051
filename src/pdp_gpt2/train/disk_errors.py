"""A full or read-only disk is the user's problem, not a bug: one line naming the path
(exit 2), and a run it interrupted must not look finished."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from pdp_gpt2.errors import DISK_ERRNOS as DISK_ERRORS  # errors of the disk, not of the program: exit 2
from pdp_gpt2.errors import DISK_WORDS as _DISK_WORDS
from pdp_gpt2.errors import UsageError

_FULL_BYTES = 1 << 20  # less free space than this after a failed write: the disk is full


def disk_error(e: BaseException, output_dir: Path | None = None) -> UsageError | None:
    """A full or read-only disk as one line naming the path (None for any other error)."""
    if isinstance(e, OSError) and e.errno in DISK_ERRORS:
        where = f"{e.filename}: " if e.filename else ""
        return UsageError(f"{where}{e.strerror or os.strerror(e.errno)}; the run did not finish")
    if isinstance(e, UsageError):
        return None  # already one line
    where = f"writing {output_dir}" if output_dir is not None else "writing the run's files"
    # safetensors says "No space left on device" inside its own exception type; torch.save's
    # zip writer only says "unexpected pos ...", so a full disk is recognized by its free space.
    word = next((w for w in _DISK_WORDS if w in str(e)), None)
    if word is None and output_dir is not None and isinstance(e, (OSError, RuntimeError)):
        try:
            if shutil.disk_usage(output_dir).free < _FULL_BYTES:
                word = "No space left on device"
        except OSError:
            pass
    return UsageError(f"{where}: {word}; the run did not finish") if word else None


def unfinished(output_dir: Path) -> list[Path]:
    """After a disk error: a final/ without summary.json must not look like a finished run, and a
    checkpoint the error cut short is removed (it frees the space it took; the resumed run writes it again).
    Returns the checkpoints removed."""
    final = output_dir / "final"
    if final.is_dir() and not final.is_symlink() and not (output_dir / "summary.json").exists():
        try:
            os.replace(final, output_dir / "final.incomplete")
        except OSError:
            pass
    from pdp_gpt2.train.checkpoint import drop_incomplete_checkpoints  # torch-free callers import this module

    try:
        return drop_incomplete_checkpoints(output_dir)
    except OSError:
        return []
