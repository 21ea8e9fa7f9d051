"""FSDP2 (fully_shard, DTensor weights) on 2 CPU ranks (gloo): sharded selection is bit-identical
to the full-tensor functions, and a pruning loop on a fully_shard-ed model matches the full weight.

Each test launches this same file under torchrun (``python -m torch.distributed.run ...
tests/test_fsdp.py <case> <out_dir>``); every rank checks its own results and writes
``ok<rank>.json``, so a failing rank shows up as a traceback in the returned stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()


def launch(case: str, out: Path, nproc: int = 2, timeout: int = 240) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(HERE), case, str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:] + r.stderr[-6000:])
    return [json.loads((out / f"ok{i}.json").read_text()) for i in range(nproc)]


# ---- the tests (parent side) -------------------------------------------------------------


def test_sharded_selection_is_bit_identical_to_full_tensor_functions(tmp_path):
    res = launch("selection", tmp_path)
    assert res[0]["checked"] == res[1]["checked"] > 300  # every comparison ran on both ranks
    assert res[0]["calls_per_fp32_threshold"] == 4  # 31 key bits in 4 radix passes, k and k+1 together


# ---- the workers (run under torchrun) ------------------------------------------------------


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                    b.reshape(-1).view(torch.uint8))


def _selection(out: Path) -> None:
    import torch.distributed as dist
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    from pdp_gpt2.pdp import mask as M
    from pdp_gpt2.pdp import sharded as S
    from pdp_gpt2.pdp.attach import global_budgets
    from pdp_gpt2.pdp.baselines import keep_from_scores
    from pdp_gpt2.pdp.targets import in_last

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    checked = 0

    def shard(full):
        return distribute_tensor(full, mesh, [Shard(0)])

    gen = torch.Generator().manual_seed(0)
    shapes = [(64, 192), (37, 50), (1, 8), (3, 5), (128, 64)]
    for dtype in (torch.float32, torch.bfloat16):
        for shape in shapes:
            for kind in ("normal", "ties"):
                if kind == "normal":
                    full = torch.randn(shape, generator=gen).to(dtype)
                else:  # many equal magnitudes, zeros and -0.0 among them
                    full = (torch.randint(-3, 4, shape, generator=gen) * 0.5).to(dtype)
                    full.view(-1)[::7] = -0.0
                w = shard(full)
                lay = S.layout(w)
                n = full.numel()
                for k in sorted({0, 1, n // 3, n // 2, n - 1, n, int(torch.randint(0, n + 1, (1,), generator=gen))}):
                    before = S.comm["all_reduce"]
                    t = S.abs_threshold(w, k)
                    assert _bits_equal(t, M.threshold(full.abs(), k)), (dtype, shape, kind, k)
                    if dtype == torch.float32 and 0 < k < n:
                        calls = S.comm["all_reduce"] - before
                    keep = S.keep_smallest(w.to_local().abs(), k, n, lay)
                    assert torch.equal(keep, S.my_rows(M.hard_mask_from_scores(full.abs(), k), lay)), (shape, kind, k)
                    checked += 2
                for out_dim in (0, 1):
                    rows = shape[out_dim]
                    for k in sorted({0, 1, rows // 2, rows - 1, rows}):
                        ref = M.threshold((full * full).sum(dim=1 - out_dim, keepdim=True).sqrt(), k)
                        assert _bits_equal(S.row_threshold(w, out_dim, k), ref), (shape, out_dim, k)
                        r = k / rows if rows else 0.0
                        ref_keep = keep_from_scores(full.abs(), r, pattern="row", nm=None, out_dim=out_dim)
                        got = S.row_keep(w.to_local().abs(), lay, out_dim, M.num_pruned(rows, r))
                        assert torch.equal(got, S.my_rows(ref_keep, lay)), (shape, out_dim, k)
                        checked += 2
        # N:M: Linear (out, in) never straddles; Conv1D (in, out) needs whole groups per rank
        for shape, out_dim in [((6, 16), 0), ((16, 12), 1), ((40, 8), 1)]:
            full = torch.randn(shape, generator=gen).to(dtype)
            full.view(-1)[::5] = 0.25
            w = shard(full)
            lay = S.layout(w)
            for k in (0, 1, 2):
                ref = M.nm_threshold(in_last(full, out_dim), k, 4)
                assert _bits_equal(S.nm_threshold(w, out_dim, k, 4), ref), (shape, out_dim, k)
                from pdp_gpt2.pdp.targets import from_in_last
                ref_keep = from_in_last(M.nm_hard_mask(in_last(full, out_dim), k, 4), out_dim)
                assert torch.equal(S.nm_keep(w.to_local(), lay, out_dim, k, 4), S.my_rows(ref_keep, lay))
                checked += 2
    straddle = shard(torch.randn(12, 8))  # 6 input rows per rank: groups of 4 would straddle
    try:
        S.nm_threshold(straddle, 1, 2, 4)
        raise AssertionError("a straddling N:M group was not refused")
    except ValueError as e:
        assert "straddle" in str(e)
    # global allocation over tensors of different sizes, including ties across tensors
    weights = {"a": torch.randn(64, 192, generator=gen), "b": (torch.randint(-2, 3, (37, 50), generator=gen) * 0.1),
               "c": torch.randn(3, 5, generator=gen).to(torch.bfloat16)}
    for s in (0.0, 0.3, 0.5, 0.9):
        ref = global_budgets(weights, s)
        got = S.global_budgets({k: shard(v) for k, v in weights.items()}, s)
        assert got == ref, (s, got, ref)
        checked += 1
    # several tensors in one set of passes give what each gives alone
    items = [([shard(v).to_local().abs()], k, v.numel()) for v, k in
             [(weights["a"], 100), (weights["b"], 900), (weights["c"], 7)]]
    batch = S.thresholds(items, mesh.get_group())
    for (xs, k, n), t, v in zip(items, batch, weights.values()):
        assert _bits_equal(t, M.threshold(v.abs(), k))
        checked += 1
    (out / f"ok{dist.get_rank()}.json").write_text(json.dumps({"checked": checked,
                                                               "calls_per_fp32_threshold": calls}))


if __name__ == "__main__":
    import torch.distributed as dist

    case, out_dir = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        {"selection": _selection}[case](out_dir)
    finally:
        dist.destroy_process_group()
