"""What the run a user makes costs, phase by phase, against the same run with ``--method dense``.

    python benchmarks/run_cost.py                       # pdp (the README's default run), gmp, movement
    python benchmarks/run_cost.py --methods pdp --max_steps 300 --json out.json

Each method is one ``pdp-gpt2 train`` subprocess with the default flags (``--method`` aside); dense runs
first with the same steps, data and flags. From each run's metrics.jsonl (one wall time per optimizer
step) and summary.json (each evaluation's wall time) it prints, per method: the training time of the
sparsity ramp and of the recovery after it (where PDP anneals tau), the evaluations (reported, not
compared: a pruning run evaluates three times, dense twice), method / dense per phase and overall, and
the slowest 50-step window against dense at the same steps. The JSON adds the machine (CPU model and
flags, threads, load average before and after each run) and the revision.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WINDOW = 50


def machine() -> dict:
    info = {"python": platform.python_version(), "cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        info["cpu"] = fields.get("Model name", "").strip()
        flags = fields.get("Flags", "").split()
        info["simd"] = sorted(f for f in flags if f.startswith(("avx2", "avx512", "amx")))
    except (OSError, subprocess.CalledProcessError):
        info["cpu"] = platform.processor()
    import torch

    info.update(torch=torch.__version__, threads=torch.get_num_threads(),
                kernels=torch.backends.cpu.get_cpu_capability())
    return info


def revision() -> str:
    def git(*a):
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    rev = git("rev-parse", "--short", "HEAD")
    return rev + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


def load() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]] if Path("/proc/loadavg").exists() else []


def train(method: str, out: Path, extra: list[str]) -> dict:
    """One default run of ``method`` into ``out``: its step times, evaluation times and summary."""
    cmd = [sys.executable, "-m", "pdp_gpt2", "train", "--method", method, "--output_dir", str(out),
           "--overwrite_output_dir", "--progress", "false", *extra]
    before = load()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    summary = json.loads((out / "summary.json").read_text())
    steps: list[float] = []
    for line in (out / "metrics.jsonl").read_text().splitlines():
        steps += json.loads(line).get("step_seconds", [])
    return {"method": method, "wall_seconds": round(wall, 1), "load_before": before, "load_after": load(),
            "steps": steps, "ramp_steps": summary["ramp_steps"], "eval_seconds": summary.get("eval_seconds", {}),
            "perplexity": summary["perplexity"], "train_seconds": summary["train_seconds"]}


def phases(run: dict) -> dict:
    r, s = run["ramp_steps"], run["steps"]
    return {"ramp": sum(s[:r]), "recovery": sum(s[r:]), "training": sum(s)}


def slowest_window(run: dict, dense: dict, width: int = WINDOW) -> dict:
    """The ``width``-step window where ``run`` is slowest against dense at the same steps."""
    a, b = run["steps"], dense["steps"]
    n = min(len(a), len(b))
    best = None
    for start in range(0, max(1, n - width + 1)):
        ra, rb = sum(a[start:start + width]), sum(b[start:start + width])
        if rb > 0 and (best is None or ra / rb > best["ratio"]):
            best = {"steps": [start + 1, min(n, start + width)], "seconds": round(ra, 2),
                    "dense_seconds": round(rb, 2), "ratio": ra / rb}
    return best or {}


def compare(run: dict, dense: dict) -> dict:
    p, d = phases(run), phases(dense)
    return {"phases": {k: {"seconds": round(p[k], 2), "dense_seconds": round(d[k], 2),
                           "ratio": round(p[k] / d[k], 3) if d[k] else None} for k in p},
            "evaluations": run["eval_seconds"], "dense_evaluations": dense["eval_seconds"],
            "slowest_window": {k: (round(v, 3) if k == "ratio" else v) for k, v in slowest_window(run, dense).items()}}


def table(results: dict) -> list[str]:
    rows = ["| method | ramp s (× dense) | recovery s (× dense) | training s (× dense) | slowest 50 steps "
            "(× dense) | evaluations s |", "|---|---:|---:|---:|---:|---|"]
    for m, c in results.items():
        ph, w = c["phases"], c["slowest_window"]
        cell = lambda k: f"{ph[k]['seconds']:.1f} ({ph[k]['ratio']:.2f})"  # noqa: E731
        evals = ", ".join(f"{k} {v:.1f}" for k, v in c["evaluations"].items())
        rows.append(f"| {m} | {cell('ramp')} | {cell('recovery')} | {cell('training')} | "
                    f"{w['steps'][0]}-{w['steps'][1]}: {w['ratio']:.2f} | {evals} |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default="pdp,gmp,movement", help="comma-separated methods, each against dense")
    p.add_argument("--out", default="runs/run_cost", help="where the runs go")
    p.add_argument("--json", default=None, help="write the numbers and the machine here")
    p.add_argument("--max_steps", type=int, default=None, help="shorter runs (default: the default run's length)")
    a = p.parse_args(argv)
    extra = [] if a.max_steps is None else ["--max_steps", str(a.max_steps)]
    out = Path(a.out)
    info = {"machine": machine(), "revision": revision(), "command": " ".join(["python benchmarks/run_cost.py",
                                                                              *(sys.argv[1:] if argv is None else argv)])}
    dense = train("dense", out / "dense", extra)
    runs, results = {"dense": dense}, {}
    for m in [m for m in a.methods.split(",") if m]:
        runs[m] = train(m, out / m, extra)
        results[m] = compare(runs[m], dense)
        print(f"{m}: training {results[m]['phases']['training']['ratio']:.3f}x dense", flush=True)
    print("\n".join(table(results)))
    print(f"machine: {info['machine']}; revision {info['revision']}; load before/after each run: "
          + "; ".join(f"{m} {r['load_before'][:1]}/{r['load_after'][:1]}" for m, r in runs.items()))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps({**info, "results": results, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
