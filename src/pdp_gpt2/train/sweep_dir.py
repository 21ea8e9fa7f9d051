"""What a sweep directory may hold before a sweep writes into it, and which of it is the sweep's own.

A sweep reuses a finished trial whose flags are exactly the planned ones and refuses, before any
trial runs, one with other flags: reusing it would put another sweep's result in this sweep's table,
running it again would delete it.  A trial that did not finish (killed, failed) is run again.
The sweep's own files (sweep.csv, sweep_config.yaml, sweep_args.json) are replaced only where they
are recognisably a sweep's: sweep.csv by its columns, the others by sweep_args.json's ``written_by``.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from pdp_gpt2.errors import UsageError

def _read_params(tdir: Path) -> dict | None:
    """A trial's params.json, or None if it has none that parses as an object."""
    try:
        params = json.loads((tdir / "params.json").read_text())
    except (OSError, ValueError):
        return None
    return params if isinstance(params, dict) else None


def finished_with(tdir: Path, params: dict) -> bool:
    return (tdir / "summary.json").is_file() and _read_params(tdir) == json.loads(json.dumps(params))


def check_trial_dirs(trials: list[tuple[str, dict]], out: Path) -> None:
    """UsageError, before any trial runs, for what the sweep would otherwise lose in ``out``: a
    sweep.csv it did not write, or a finished trial whose flags are not the planned ones (reusing
    it would put another sweep's result in this table; running it again would delete it)."""
    table = out / "sweep.csv"
    if table.exists() and not is_sweep_csv(table):
        raise UsageError(f"{table} is not one a sweep wrote (no trial, status, ..., cached columns); "
                         "move it away or pass another --output_dir")
    for name, params in trials:
        tdir = out / name
        if not (tdir / "summary.json").is_file() or finished_with(tdir, params):
            continue
        old = _read_params(tdir)
        if old is None:
            raise UsageError(f"{tdir} holds a finished run whose flags cannot be checked (no readable "
                             "params.json); pass another --output_dir, or remove it to run that trial again")
        new = json.loads(json.dumps(params))
        diff = ", ".join(f"{k} {old.get(k, '(unset)')} -> {new.get(k, '(unset)')}"
                         for k in sorted({*old, *new}) if old.get(k) != new.get(k))
        raise UsageError(f"{tdir} holds a finished trial of another sweep ({diff}); it is neither reused "
                         "nor replaced: pass another --output_dir, or remove it to run this one")


# The columns every table write_csv makes for run_trials (the parameters and metrics sit between).
CSV_SIGNATURE = ("trial", "status"), ("wall_seconds", "returncode", "error", "cached")


def is_sweep_csv(path: Path) -> bool:
    """Whether ``path`` is a sweep.csv a sweep wrote: its header has a sweep table's own columns."""
    try:
        with open(path, newline="") as f:
            header = next(csv.reader(f), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return False
    first, own = CSV_SIGNATURE
    return tuple(header[:2]) == first and set(own) <= set(header)


# sweep_args.json says who wrote it, so a later sweep knows the directory's sweep files are its own.
WRITTEN_BY = "pdp-gpt2 sweep"


def check_sweep_files(out: Path, config_text: str) -> None:
    """UsageError if the copy of the sweep file or the settings would replace files that are not a
    sweep's own: a directory is a sweep's when its sweep.csv or sweep_args.json says so."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} exists and is not a directory")
    try:
        args = json.loads((out / "sweep_args.json").read_text())
    except (OSError, ValueError):
        args = None
    ours = (isinstance(args, dict) and args.get("written_by") == WRITTEN_BY) or is_sweep_csv(out / "sweep.csv")
    config = out / "sweep_config.yaml"
    for path in (config, out / "sweep_args.json"):
        if path.exists() and not ours and not (path == config and _same_text(path, config_text)):
            raise UsageError(f"{path} is not one a sweep wrote here; move it away or pass another --output_dir")


def _same_text(path: Path, text: str) -> bool:
    try:
        return path.read_text() == text
    except (OSError, UnicodeDecodeError):
        return False
