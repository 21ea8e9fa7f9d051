"""benchmarks/distill_overhead.py runs and prints what docs/performance.md quotes (no timing asserted)."""
import json
import subprocess
import sys

import pytest

from helpers import ROOT


@pytest.mark.slow  # three fresh interpreters
def test_the_distill_benchmark_runs_on_a_tiny_shape(tmp_path):
    out = tmp_path / "d.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "distill_overhead.py"), "--model", "tiny",
                        "--rounds", "2", "--warmup", "1", "--mem-steps", "1", "--json", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert set(d["time"]["median_s"]) == set(d["memory"]["peak_bytes"]) == {"plain", "distill"}
    assert d["time"]["ratio_paired_median"] > 0 and d["memory"]["ratio"] > 0
    assert d["machine_before"]["load_average"] and "revision" in d["machine_before"]
