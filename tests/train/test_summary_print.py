"""The closing table prints target and actual sparsity with the same digits, enough to show the
target exactly: a rounded target must not hide a difference ("target 1.000 actual 0.9900")."""
from __future__ import annotations

import pytest

from pdp_gpt2.train.summary import print_table


def _sparsity_line(capsys, target, actual):
    print_table({"method": "pdp", "model": "m", "dataset": "d", "train_steps": 20, "train_seconds": 1.0,
                 "eval_split": "test", "perplexity_dense": 10.0, "perplexity_soft": 11.0, "perplexity": 12.0,
                 "sparsity_target": target, "sparsity_actual": actual, "target_weights": 1000, "final_dir": "f"})
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "sparsity " in ln)
    return line.split()[1:5]


@pytest.mark.parametrize("target, actual, shown", [
    (0.99999, 0.99, ["target", "0.99999", "actual", "0.99000"]),  # was "target 1.000 actual 0.9900"
    (0.9, 0.9, ["target", "0.9000", "actual", "0.9000"]),
    (0.9, 0.899994, ["target", "0.9000", "actual", "0.9000"]),  # below the target's own precision: count rounding
    (0.5, 0.4375, ["target", "0.5000", "actual", "0.4375"]),
    (0.123456789, 0.12, ["target", "0.12345679", "actual", "0.12000000"]),  # at most 8 digits
])
def test_target_and_actual_have_the_same_digits(capsys, target, actual, shown):
    assert _sparsity_line(capsys, target, actual) == shown
