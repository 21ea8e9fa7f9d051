"""Atomic file writes, shared by every layer (train, export, report): a reader either sees
the old file or the complete new one, never half of it, even if the writer is killed.

Every file written here gets the mode of a normally created file, ``0o666 & ~umask``
(directories ``0o777 & ~umask``): mkstemp, mkdtemp and safetensors' own writer make 0600
files, which another user of a shared run directory then cannot read."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path


def created_mode(directory: bool = False) -> int:
    """The mode open()/mkdir() would give a new file (directory) under the current umask."""
    umask = os.umask(0)  # the only portable way to read it is to set it (and put it back at once)
    os.umask(umask)
    return (0o777 if directory else 0o666) & ~umask


def normalize_modes(root: Path) -> None:
    """Give ``root`` and everything under it the created mode (symlinks are left alone, never followed)."""
    file_mode, dir_mode = created_mode(), created_mode(directory=True)
    for dirpath, dirnames, filenames in os.walk(root):  # os.walk does not descend into symlinked dirs
        os.chmod(dirpath, dir_mode)
        for name in filenames + dirnames:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p) and os.path.isfile(p):
                os.chmod(p, file_mode)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, created_mode())  # mkstemp makes 0600 files
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_dir(final: Path, write) -> None:
    """Call ``write(tmp_dir)`` then rename tmp_dir to ``final`` (replacing an old one), every file
    in it with the created mode (``model.safetensors`` comes out of safetensors 0600)."""
    tmp = final.with_name(f".{final.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    normalize_modes(tmp)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
