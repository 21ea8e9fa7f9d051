"""benchmarks/run_cost.py: phases, windows and ratios from per-step times, worked by hand."""
import pytest

from helpers import load_script


@pytest.fixture(scope="module")
def rc():
    return load_script("benchmarks/run_cost.py")


def test_phases_windows_and_ratios(rc):
    dense = {"steps": [1.0] * 100, "ramp_steps": 40, "eval_seconds": {"dense": 5.0, "pruned": 5.0}}
    # 1.1x on the ramp, then a slow stretch of 10 steps at 3x in the recovery
    run = {"steps": [1.1] * 40 + [1.0] * 30 + [3.0] * 10 + [1.0] * 20, "ramp_steps": 40,
           "eval_seconds": {"dense": 5.0, "soft": 6.0, "pruned": 5.0}}
    c = rc.compare(run, dense)
    assert c["phases"]["ramp"] == {"seconds": 44.0, "dense_seconds": 40.0, "ratio": 1.1}
    assert c["phases"]["recovery"] == {"seconds": 80.0, "dense_seconds": 60.0, "ratio": 1.333}
    assert c["phases"]["training"]["ratio"] == pytest.approx(124 / 100, abs=1e-3)
    w = c["slowest_window"]  # the 50 steps that hold the whole slow stretch and, before it, the ramp's 1.1x
    assert w["ratio"] == pytest.approx((10 * 3.0 + 10 * 1.1 + 30 * 1.0) / 50, abs=1e-3)
    assert w["steps"] == [31, 80] and w["dense_seconds"] == 50.0
    assert c["evaluations"] == {"dense": 5.0, "soft": 6.0, "pruned": 5.0}
    row = rc.table({"pdp": c})[2]
    assert row.startswith("| pdp | 44.0 (1.10) | 80.0 (1.33) | 124.0 (1.24) | 31-80: 1.42 |")
