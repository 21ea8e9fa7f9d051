"""Where an export goes: ``--out`` made absolute, what ``--overwrite`` may replace, and the move
into place.

The rule is train's (train/rundir.py): overwrite replaces only what this tool wrote.  An
export is recognised by its ``size_report.json``, which lists every file the export was
written with (itself included); a directory holding anything else (a training run, a
checkpoint, a ``.git``, one more file) is refused in one line and left as it was.

The finished export is renamed into place.  Without ``--overwrite`` that rename is the
check: the kernel refuses to rename a directory onto a non-empty one, so of two exports
racing to one ``--out`` the second is refused instead of replacing the first.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

from pdp_gpt2.errors import UsageError

REPORT = "size_report.json"


def out_path(out: str | Path) -> Path:
    """``--out`` as an absolute path with its parent resolved: ``.`` and ``..`` become the directories
    they name (renaming ``.`` was an EBUSY traceback).  A symlink is refused: export never deletes or
    writes through one."""
    p = Path(os.path.abspath(Path(out).expanduser()))
    if p.is_symlink():
        raise UsageError(f"--out {out} is a symbolic link; give the directory itself (export never writes "
                         "or deletes through a link)")
    return p.parent.resolve() / p.name if p.name else p


def export_files(out: Path) -> set[str] | None:
    """The names an earlier export in ``out`` was written with (its size_report.json's ``files``),
    or None when ``out`` is not recognisably one."""
    try:
        report = json.loads((out / REPORT).read_text())
    except (OSError, ValueError):
        return None
    files = report.get("files") if isinstance(report, dict) else None
    if not isinstance(files, list) or REPORT not in files or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def check_overwritable(out: Path) -> None:
    """UsageError unless ``out`` holds an earlier export and nothing besides it."""
    files = export_files(out)
    if files is None:
        raise UsageError(f"--overwrite: {out} is not a pdp-gpt2 export (no {REPORT} listing its files); "
                         "refusing to delete anything in it")
    extra = sorted(p.name for p in out.iterdir() if p.name not in files)
    if extra:
        raise UsageError(f"--overwrite: {out} holds {extra[0]} besides the export; refusing to delete it "
                         "(move it away, or choose another --out)")


def check_out(out: Path, model_dir: Path, overwrite: bool) -> None:
    """Before any work: refuse an ``--out`` that is, holds or lies in the model being exported, a
    non-empty one without ``--overwrite``, and with it, anything but an earlier export."""
    src, dst = model_dir.resolve(), out.resolve()
    if dst == src or dst in src.parents or src in dst.parents:
        raise UsageError(f"--out {out} is, holds or lies inside the model being exported ({src}); "
                         "choose another directory")
    if os.path.lexists(out) and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(f"--out {out} exists and is not empty (pass --overwrite to replace an earlier export)")
        check_overwritable(out)


def move_into_place(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``out``; an earlier export is deleted only once the new one is in."""
    if overwrite and out.is_dir() and any(out.iterdir()):
        check_overwritable(out)  # again: it may have changed while this export was being written
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            try:
                os.rename(old, out)
            except OSError:
                pass  # someone else's export is at out now; the earlier one stays in `old`
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.rename(tmp, out)  # onto nothing or an empty directory; the kernel refuses a non-empty one
    except OSError as e:
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
            raise UsageError(f"--out {out} was filled by another export meanwhile; this one was not kept "
                             "(the other is left as it is)") from None
        raise
