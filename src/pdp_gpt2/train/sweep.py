"""Run a W&B sweep file locally, without a W&B server.

The same ``sweep_config.yaml`` works with ``wandb sweep`` + ``wandb agent`` and with
``pdp-gpt2 sweep`` (the file and its trials: sweep_spec.py). Each trial runs the train CLI in its
own subprocess with the flags an agent would pass, so a crash or a bad value ends that trial
only. ``sweep.csv`` is rewritten after every trial, and a trial that already finished with the
same parameters is reused, so re-running a sweep runs only what is missing or failed; a finished trial with
other parameters is refused before any trial runs, never replaced (sweep_dir.py).
"""
from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import time
from pathlib import Path

from pdp_gpt2.atomic import atomic_write_json, atomic_write_text
from pdp_gpt2.train.sweep_dir import WRITTEN_BY, check_sweep_files, check_trial_dirs, finished_with
from pdp_gpt2.train.sweep_spec import SweepSpec, load_spec, planned

METRICS = ("perplexity", "perplexity_soft", "perplexity_dense", "soft_hard_gap", "sparsity_actual",
           "train_seconds", "train_steps")


def flag_value(v) -> str:
    if isinstance(v, bool):
        return str(v)  # True / False, as wandb agent passes them
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def trial_argv(params: dict) -> list[str]:
    """The flags a W&B agent would pass: --name=value, one per parameter (None values are left out)."""
    return [f"--{k}={flag_value(v)}" for k, v in params.items() if v is not None]


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or [""])[-1][:300]


# The sweep's own files in a trial directory.  They are written after the trial's run (the log
# next to the directory while it runs), because `pdp-gpt2 train` refuses a directory that holds
# files it did not write, and --overwrite_output_dir only clears a directory holding a run of ours.
BOOKKEEPING = ("params.json", "trial.json", "train.log")


def run_trial(params: dict, trial_dir: Path, timeout: float | None = None) -> dict:
    """Train one trial in a subprocess; returns status, returncode and the error line if it failed.
    The log is ``<trial_dir>/train.log`` afterwards."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    # a killed or failed earlier run is replaced; a finished one never is (train then refuses the directory)
    rerun = (not (trial_dir / "summary.json").exists()
             and any(p.name not in BOOKKEEPING for p in trial_dir.iterdir()))
    cmd = [sys.executable, "-m", "pdp_gpt2", "train", *trial_argv(params), f"--output_dir={trial_dir}",
           *(["--overwrite_output_dir=True"] if rerun else []), "--progress=False"]
    log = trial_dir.parent / f".{trial_dir.name}.train.log"
    with open(log, "w") as f:
        f.write(" ".join(cmd) + "\n")
        f.flush()
        try:
            rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    trial_dir.mkdir(parents=True, exist_ok=True)  # a refused run may have left nothing
    log = log.replace(trial_dir / "train.log")
    finished = (trial_dir / "summary.json").is_file()
    status = "ok" if rc == 0 and finished else "failed"
    error = "" if status == "ok" else ("timed out" if rc == 124 else last_line(log.read_text()))
    return {"status": status, "returncode": rc, "error": error}


def run_sweep(spec: SweepSpec, out: Path, *, count: int | None = None, seed: int = 0,
              overrides: dict | None = None, timeout: float | None = None, runner=run_trial) -> list[dict]:
    """Run every planned trial in turn; returns the sweep.csv rows."""
    return run_trials(planned(spec, count, seed, overrides), out, metric=spec.metric, timeout=timeout, runner=runner)


def run_trials(trials: list[tuple[str, dict]], out: Path, *, metric: str = "perplexity",
               timeout: float | None = None, runner=run_trial) -> list[dict]:
    """Run named trials (name -> train flags) into ``out/<name>/``, one after the other; writes
    ``out/sweep.csv`` after each and returns its rows.  Finished trials with the same flags are reused;
    one with other flags, or a sweep.csv the sweep did not write, is refused before any trial runs."""
    check_trial_dirs(trials, out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    for i, (name, params) in enumerate(trials):
        tdir = out / name
        cached = finished_with(tdir, params)
        if cached:
            result = json.loads((tdir / "trial.json").read_text()) if (tdir / "trial.json").is_file() else {
                "status": "ok", "returncode": 0, "error": "", "wall_seconds": None}
        else:
            tdir.mkdir(parents=True, exist_ok=True)
            for f in BOOKKEEPING:  # a previous attempt's: the train run must find only its own files
                (tdir / f).unlink(missing_ok=True)
            t0 = time.time()
            try:
                result = runner(params, tdir, timeout)
            except Exception as e:  # the runner itself failed (cannot start python, disk full...)
                result = {"status": "failed", "returncode": -1, "error": f"{type(e).__name__}: {e}"}
            result = {**result, "wall_seconds": round(time.time() - t0, 1)}
            tdir.mkdir(parents=True, exist_ok=True)
            _write_params(tdir, params)  # with summary.json: marks the trial finished with these flags
            _write_json(tdir / "trial.json", result)
        row = {"trial": name, "status": result["status"], **params, **metrics_of(tdir),
               "wall_seconds": result.get("wall_seconds"), "returncode": result["returncode"],
               "error": result["error"], "cached": bool(cached)}
        rows.append(row)
        write_csv(rows, out / "sweep.csv")
        value = row.get(metric)
        print(f"[{i + 1}/{len(trials)}] {name} {row['status']}"
              f"{'' if value in (None, '') else f'  {metric}={value:.4g}'}"
              f"{'  (cached)' if cached else ''}{'  ' + row['error'] if row['error'] else ''}", flush=True)
    return rows


def _write_json(path: Path, obj) -> None:
    atomic_write_json(path, obj)


def _write_params(tdir: Path, params: dict) -> None:
    _write_json(tdir / "params.json", params)


def metrics_of(tdir: Path) -> dict:
    """Final metrics from a trial's summary.json (empty cells if it did not finish)."""
    p = tdir / "summary.json"
    s = json.loads(p.read_text()) if p.is_file() else {}
    return {k: s.get(k) for k in METRICS}


def write_csv(rows: list[dict], path: Path) -> None:
    cols: list[str] = []
    for r in rows:
        cols += [k for k in r if k not in cols]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    atomic_write_text(path, buf.getvalue())


def best(rows: list[dict], metric: str, goal: str) -> dict | None:
    ok = [r for r in rows if r["status"] == "ok" and isinstance(r.get(metric), (int, float))]
    if not ok:
        return None
    return (min if goal == "minimize" else max)(ok, key=lambda r: r[metric])


def run_sweep_file(config: str | Path, out: Path, *, count: int | None = None, seed: int = 0,
                   overrides: dict | None = None, timeout: float | None = None,
                   settings: dict | None = None) -> dict:
    """`pdp-gpt2 sweep`: run a sweep file into ``out``, next to a copy of the file
    (``sweep_config.yaml``) and the settings it ran with (``sweep_args.json``).

    Returns ``{"rows", "failed", "best", "metric", "goal"}``: the sweep.csv rows, how many
    trials failed, and the best finished trial by the file's metric (None if none finished).
    """
    spec = load_spec(config)
    out = Path(out)
    trials = planned(spec, count, seed, overrides)
    text = Path(config).read_text()
    check_sweep_files(out, text)
    check_trial_dirs(trials, out)  # before the first file is written
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "sweep_config.yaml", text)
    _write_json(out / "sweep_args.json", {"written_by": WRITTEN_BY, **(settings or {})})
    rows = run_trials(trials, out, metric=spec.metric, timeout=timeout)
    return {"rows": rows, "failed": sum(r["status"] != "ok" for r in rows), "best": best(rows, spec.metric, spec.goal),
            "metric": spec.metric, "goal": spec.goal}
