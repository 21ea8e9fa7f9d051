"""metrics.jsonl: one JSON line per logged optimizer step, also across resumes, and
robust to the cut-off last line a kill or a full disk leaves.

Each checkpoint holds a copy of the lines up to its step and the open loss window
(``metrics_state.json``, written by ``hf_trainer.RunMetrics``), so a resumed run rewrites
metrics.jsonl from the checkpoint, whatever happened to the file after it was saved (a
cut-off line, lines past the checkpoint), and its first line averages over the same
steps as an uninterrupted run's."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pdp_gpt2.atomic import atomic_write_json, atomic_write_text

CHECKPOINT_FILE = "metrics_state.json"  # in checkpoint-<N>/: {"records": [...], "loss": {"sums": [...], "since": step}}


class MetricsLog:
    """Append-only metrics.jsonl with one line per step, also across resumes.

    ``saved``: the records of the checkpoint resumed from (its copy); the file is rewritten from
    them.  Without it, ``resume_step`` keeps the file's own lines up to that step (an older
    checkpoint without a copy).  ``records`` holds the lines of this file, for the next checkpoint.
    """

    def __init__(self, path: Path, resume_step: int | None = None, saved: list[dict] | None = None):
        self.path = path
        self.records: list[dict] = []
        if saved is not None:
            self.records = [dict(r) for r in saved]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))
        elif resume_step is not None and path.exists():
            # Drop lines logged after the checkpoint we resume from: they will be logged again.
            kept = [(ln, rec) for ln, rec in self._lines(warn=True) if rec["step"] <= resume_step]
            self.records = [rec for _, rec in kept]
            atomic_write_text(path, "".join(ln + "\n" for ln, _ in kept))

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
        self.records.append(record)

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [rec for _, rec in self._lines()]


def save_checkpoint_copy(checkpoint: Path, records: list[dict], loss: dict) -> None:
    atomic_write_json(Path(checkpoint) / CHECKPOINT_FILE, {"records": records, "loss": loss})


def read_saved(checkpoint: Path | None) -> dict | None:
    """A checkpoint's metrics_state.json ({"records", "loss"}), or None: absent (a checkpoint from
    before it existed) or unreadable, which is said in one line; the resume then falls back to the
    lines of metrics.jsonl up to the checkpoint, and a loss window that starts at it."""
    if checkpoint is None or not (Path(checkpoint) / CHECKPOINT_FILE).is_file():
        return None
    path = Path(checkpoint) / CHECKPOINT_FILE
    try:
        state = json.loads(path.read_text())
        records, loss = state["records"], state["loss"]
        if not (isinstance(records, list) and all(isinstance(r, dict) and "step" in r for r in records)
                and isinstance(loss["since"], int) and all(isinstance(x, (int, float)) for x in loss["sums"])):
            raise ValueError("unexpected layout")
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"pdp-gpt2: warning: {path} does not parse ({e}); keeping metrics.jsonl's own lines up to the "
              "checkpoint", file=sys.stderr, flush=True)
        return None
    return state
