"""metrics.jsonl: one JSON line per logged optimizer step, also across resumes, and
robust to the cut-off last line a kill or a full disk leaves."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pdp_gpt2.atomic import atomic_write_text


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
