"""A huge grid is never expanded: 8 parameters x 30 values took 7 GB in 30 s with
`--dry_run --count 2`. The grid is enumerated lazily (itertools.product + islice), and without
--count a grid over sweep_spec.MAX_TRIALS is refused in one line before any trial is made."""
import tracemalloc

import yaml

from pdp_gpt2.cli import main
from pdp_gpt2.train import sweep_spec

# train flags that take a number (planning does not check the values; --dry_run checks those it lists)
NAMES = ("sparsity", "tau", "learning_rate", "beta", "bits", "seed", "max_steps", "warmup_steps")


def _grid(n_params: int, n_values: int) -> dict:
    return {"method": "grid", "parameters": {n: {"values": list(range(1, n_values + 1))} for n in NAMES[:n_params]}}


def test_grid_with_count_materializes_only_count_trials():
    spec = sweep_spec.parse_spec(_grid(6, 8))  # 262,144 combinations: ~80 MB when expanded as dicts
    tracemalloc.start()
    try:
        trials = sweep_spec.plan_trials(spec, 2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert trials == [{**{n: 1 for n in NAMES[:6]}}, {**{n: 1 for n in NAMES[:5]}, NAMES[5]: 2}]
    assert peak < 200_000, peak  # a few trials' worth, not the grid's


def test_grid_size_is_counted_without_expanding():
    assert sweep_spec.grid_size(sweep_spec.parse_spec(_grid(8, 30)).parameters) == 30 ** 8
    assert sweep_spec.grid_size({"a": {"values": [1, 2]}, "b": {"value": 0}}) == 2


def test_dry_run_count_2_on_a_30_to_the_8_grid(tmp_path, capsys):
    """--dry_run checks the trials it lists as train would: their first values are valid ones."""
    first = {"sparsity": 0.5, "bits": 8, "max_steps": 30}
    grid = _grid(8, 30)
    for name, p in grid["parameters"].items():
        p["values"][0] = first.get(name, 1)
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    assert main(["sweep", str(path), "--output_dir", str(tmp_path / "out"), "--dry_run", "--count", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == ["trial-000", "trial-001"]
    assert "--warmup_steps=2" in lines[1] and "--warmup_steps=1" in lines[0]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_huge_grid_without_count_is_one_line(tmp_path, capsys):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(_grid(8, 30)))
    for extra in (["--dry_run"], []):
        assert main(["sweep", str(path), "--output_dir", str(tmp_path / "out"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "656,100,000,000 combinations" in err and "--count" in err, err
    assert not (tmp_path / "out").exists()  # refused before the sweep directory is made
