"""A sparsity short of 1 never prints as 100.00% (a 0.99998 run read "actual 100.00%"), nor one above 0
as 0.00%: more digits where two would round it there."""
import json

import pytest

from pdp_gpt2.report.report import collect, percent, runs_table


@pytest.mark.parametrize("x, shown", [
    (0.9, "90.00"), (0.5, "50.00"), (0.12345, "12.35"), (1.0, "100.00"), (0.0, "0.00"),
    (0.99998, "99.998"), (0.999996, "99.9996"), (0.99999999, "99.999999"), (1 - 1e-12, "99.999999"),
    (0.00004, "0.004"), (1e-12, "0.000001"),
])
def test_percent_by_hand(x, shown):
    assert percent(x) == shown


def test_the_runs_table_shows_a_0_99998_run_short_of_100(tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    (d / "summary.json").write_text(json.dumps({
        "method": "pdp", "eval_split": "test", "sparsity_target": 0.99998, "sparsity_actual": 0.99998,
        "perplexity": 900.0, "perplexity_dense": 30.0, "tau": 0.1, "train_steps": 20, "train_seconds": 3.0,
        "config": {"pdp": {"tau": 0.1, "pattern": "unstructured", "allocation": "layer"}}}))
    runs, _ = collect([tmp_path])
    head, rows = runs_table(runs)
    row = dict(zip(head, rows[0]))
    assert row["actual %"] == "99.998" and row["target %"] == "99.998"
