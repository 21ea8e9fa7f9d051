"""FSDP2 (fully_shard, DTensor weights) on 2 CPU ranks (gloo): sharded selection is bit-identical
to the full-tensor functions, and a pruning loop on a fully_shard-ed model matches the full weight.

Each test launches this same file under torchrun (``python -m torch.distributed.run ...
tests/pdp/test_fsdp.py <case> <out_dir>``); every rank checks its own results and writes
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

from helpers import ROOT, TESTS

HERE = Path(__file__).resolve()


def _env() -> dict:
    """The ranks import tests/helpers.py; an outer PYTHONPATH (a source tree to test) stays in front."""
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TESTS)) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def launch(case: str, out: Path, nproc: int = 2, timeout: int = 240) -> list[dict]:
    env = _env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(HERE), case, str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:] + r.stderr[-6000:])
    return [json.loads((out / f"ok{i}.json").read_text()) for i in range(nproc)]


# ---- the tests (parent side) -------------------------------------------------------------


@pytest.mark.slow  # multi-process (torchrun, 2 ranks)
def test_sharded_selection_is_bit_identical_to_full_tensor_functions(tmp_path):
    res = launch("selection", tmp_path)
    assert res[0]["checked"] == res[1]["checked"] > 300  # every comparison ran on both ranks
    # a warm refresh of three long tensors: one all-reduce (counts) and one all-gather (candidates)
    assert res[0]["warm_calls"] == {"all_reduce": 1, "all_gather": 1}


@pytest.mark.slow
def test_fsdp_pruning_loop_matches_the_full_weights_at_every_step(tmp_path):
    """gpt2 (Conv1D) and llama (Linear) x pdp / gmp / magnitude x layer / global x unstructured /
    row / 2:4 on 2 ranks: see _loop; here, what came back."""
    from transformers import AutoModelForCausalLM

    res = launch("loop", tmp_path, timeout=400)
    assert res[0] == res[1] and set(res[0]) == {"-".join(c) for c in COMBOS}
    pdp = res[0]["gpt2-pdp-layer-unstructured"]["comm_per_step"]
    # tiny tensors are short: every target's scores joined and sorted whole, in one all-gather
    assert pdp["all_reduce"] == 0 and pdp["all_gather"] == 1
    m = AutoModelForCausalLM.from_pretrained(tmp_path / "llama-gmp-global-unstructured")  # a plain HF dir
    zeros = sum(int((mod.weight == 0).sum()) for n, mod in m.named_modules()
                if ".layers." in n and isinstance(mod, torch.nn.Linear))
    assert zeros == res[0]["llama-gmp-global-unstructured"]["zeros"]


@pytest.mark.slow
def test_fsdp_on_one_rank_gives_the_plain_run_s_final_weights(tmp_path):
    res = launch("one_rank", tmp_path, nproc=1)
    assert res[0] == {"gpt2-pdp-layer-unstructured": 29, "llama-gmp-global-unstructured": 21}


@pytest.mark.slow
def test_fsdp_killed_after_a_checkpoint_resumes_bit_identical_to_an_uninterrupted_run(tmp_path):
    env = _env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(HERE), "resume_first", str(tmp_path)]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-6000:]
    for combo in RESUME_COMBOS:  # each checkpoint is complete: shards of both ranks, driver state last
        ckpt = tmp_path / ("ckpt-" + "-".join(combo))
        assert json.loads((ckpt / "pdp_state.json").read_text())["steps"] == 4
        assert len(list(ckpt.glob("*.distcp"))) == 2
    res = launch("resume_second", tmp_path)
    assert res[0] == {"gpt2-gmp-layer-unstructured": 29, "llama-pdp-global-unstructured": 21}
    assert res[1] == {}  # rank 1 wrote nothing but its shards


@pytest.mark.slow
def test_fsdp_gradients_through_the_masks_reach_the_shards(tmp_path):
    res = launch("grads", tmp_path)
    assert set(res[0]) == {"gpt2-pdp-layer-unstructured", "llama-gmp-layer-row"}


@pytest.mark.slow
def test_a_toy_pattern_runs_sharded_with_nothing_added_to_the_sharded_code(tmp_path):
    """docs/architecture.md's Columns pattern (whole-tensor methods only) under 2-rank FSDP2: the
    masks equal the full weight's at every step and finalize prunes whole input features."""
    res = launch("toy", tmp_path, timeout=300)
    assert res[0] == res[1] and set(res[0]) == {"gpt2-pdp-layer-columns", "gpt2-gmp-global-columns",
                                                "llama-pdp-layer-columns"}
    # 0.75 of every target's input features: gpt2 (64 -> 48, 256 -> 192 inputs), counted on rank 0
    assert all(r["dead_inputs"] > 0 and r["dead_inputs"] == r["expected"] for r in res[0].values())


# ---- the workers (run under torchrun) ------------------------------------------------------


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.reshape(-1).view(torch.uint8),
                                                                    b.reshape(-1).view(torch.uint8))


def _selection(out: Path) -> None:
    """Every pattern's thresholds and keep-masks from the shards equal the definitions on the whole
    tensor, bit for bit: short vectors (sorted whole) and long ones (brackets), fresh and warm,
    float32/bfloat16/float16/float64, with ties, zeros and -0.0, several tensors in one call."""
    import torch.distributed as dist
    from torch.distributed.tensor import Shard, distribute_tensor, init_device_mesh

    from pdp_gpt2.pdp.kernels import mask as M
    from pdp_gpt2.pdp.kernels import sharded as S
    from pdp_gpt2.pdp.patterns import NM, Part, Row, Unstructured
    from pdp_gpt2.pdp.kernels.mask import from_in_last, in_last

    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    checked = 0

    def part(full, out_dim=0):
        w = distribute_tensor(full, mesh, [Shard(0)])
        return Part(w.to_local(), out_dim, S.layout(w))

    gen = torch.Generator().manual_seed(0)
    unstructured, row = Unstructured(), Row()
    shapes = [(64, 192), (37, 50), (1, 8), (3, 5), (128, 64), (301, 97), (256, 200)]  # the last two: brackets
    for dtype in (torch.float32, torch.bfloat16):
        for shape in shapes:
            for kind in ("normal", "ties"):
                if kind == "normal":
                    full = torch.randn(shape, generator=gen).to(dtype)
                else:  # many equal magnitudes, zeros and -0.0 among them
                    full = (torch.randint(-3, 4, shape, generator=gen) * 0.5).to(dtype)
                    full.view(-1)[::7] = -0.0
                p, n = part(full), full.numel()
                ks = sorted({0, 1, n // 3, n // 2, M.num_pruned(n, 0.9), n - 1, n,
                             int(torch.randint(0, n + 1, (1,), generator=gen))})
                ts, hints, _ = unstructured.thresholds([p] * len(ks), ks, [None] * len(ks))
                ts2, _, _ = unstructured.thresholds([p] * len(ks), ks, hints)  # warm: the same
                keeps = unstructured.keeps([p] * len(ks), ks)
                for k, t, t2, keep in zip(ks, ts, ts2, keeps):
                    ref = M.threshold(full.abs(), k)
                    assert _bits_equal(t, ref) and _bits_equal(t2, ref), (dtype, shape, kind, k)
                    assert torch.equal(keep, p.mine(M.hard_mask_from_scores(full.abs(), k))), (shape, kind, k)
                    checked += 3
                for out_dim in (0, 1):
                    rows, p = shape[out_dim], part(full, out_dim)
                    norms = (full * full).sum(dim=1 - out_dim, keepdim=True).sqrt()  # Row's scores, written out
                    ks = sorted({0, 1, rows // 2, rows - 1, rows})
                    ts, _, _ = row.thresholds([p] * len(ks), ks, [None] * len(ks))
                    for k, t, keep in zip(ks, ts, row.keeps([p] * len(ks), ks)):
                        assert _bits_equal(t, M.threshold(norms, k)), (shape, out_dim, k)
                        ref_keep = M.hard_mask_from_scores(norms, k).expand_as(full)
                        assert torch.equal(keep, p.mine(ref_keep)), (shape, out_dim, k)
                        checked += 2
        # N:M: Linear (out, in) never straddles; Conv1D (in, out) needs whole groups per rank
        nm = NM(2, 4)
        for shape, out_dim in [((6, 16), 0), ((16, 12), 1), ((40, 8), 1)]:
            full = torch.randn(shape, generator=gen).to(dtype)
            full.view(-1)[::5] = 0.25
            p = part(full, out_dim)
            for k in (0, 1, 2):
                (t,), _, _ = nm.thresholds([p], [k], [None])
                assert _bits_equal(t, M.nm_threshold(in_last(full, out_dim), k, 4)), (shape, out_dim, k)
                ref_keep = from_in_last(M.nm_hard_mask(in_last(full, out_dim), k, 4), out_dim)
                assert torch.equal(nm.keeps([p], [k])[0], p.mine(ref_keep))
                checked += 2
    for dtype in (torch.float16, torch.float64):
        ties = (torch.randint(-3, 4, (301, 97), generator=gen) * 0.5).to(dtype)
        for full in (torch.randn(301, 97, generator=gen).to(dtype), ties):
            p, n = part(full), full.numel()
            ks = [1, 600, M.num_pruned(n, 0.9), n - 1]
            ts, _, _ = unstructured.thresholds([p] * len(ks), ks, [None] * len(ks))
            for k, t, keep in zip(ks, ts, unstructured.keeps([p] * len(ks), ks)):
                assert _bits_equal(t, M.threshold(full.abs(), k)), (dtype, k)
                assert torch.equal(keep, p.mine(M.hard_mask_from_scores(full.abs(), k))), (dtype, k)
                checked += 2
    try:
        NM(2, 4).thresholds([part(torch.randn(12, 8), 1)], [2], [None])  # 6 input rows per rank
        raise AssertionError("a straddling N:M group was not refused")
    except ValueError as e:
        assert "straddle" in str(e)
    # a warm refresh of several long tensors: one all-reduce and one all-gather for all of them
    fulls = [torch.randn(256, 200, generator=gen), torch.randn(301, 97, generator=gen), torch.randn(512, 64, generator=gen)]
    parts = [part(f) for f in fulls]
    ks = [M.num_pruned(f.numel(), 0.9) for f in fulls]
    _, hints, _ = unstructured.thresholds(parts, ks, [None] * 3)
    for f in fulls:
        f.add_(torch.randn(f.shape, generator=gen) * 1e-5)
    parts = [part(f) for f in fulls]
    before = dict(S.comm)
    ts, _, _ = unstructured.thresholds(parts, ks, hints)
    calls = {k: S.comm[k] - before[k] for k in ("all_reduce", "all_gather")}
    for f, k, t in zip(fulls, ks, ts):
        assert _bits_equal(t, M.threshold(f.abs(), k))
        checked += 1
    (out / f"ok{dist.get_rank()}.json").write_text(json.dumps({"checked": checked, "warm_calls": calls}))


def _schedule(step: int, final: float, ramp: int) -> float:
    return final * min(1.0, step / ramp)


def _digest(model) -> str:
    import hashlib

    h = hashlib.sha256()
    for name, buf in model.named_buffers():
        if ".parametrizations.weight." in name:
            h.update(name.encode())
            h.update(buf.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _reference(driver, t, full, prev_keep):
    """What the full-tensor driver would put in t's mask buffer for this full weight."""
    from pdp_gpt2.pdp.kernels import mask as M

    m = driver.mask_of(t)
    s = driver.layer_sparsity(t.name)
    if driver.one_shot:
        return prev_keep  # magnitude: pruned once at attach (on the full weights), then frozen
    if not m.soft:  # gmp: pruned stay pruned (baselines.GMP.update)
        score = full.abs()
        if int((~prev_keep).sum()) <= M.num_pruned(full.numel(), s):
            score = score * prev_keep
        return driver.pattern.keep(score, t.out_dim, driver.pattern.num_pruned(full.shape, t.out_dim, s))
    return driver.pattern.threshold(full, t.out_dim, driver.pattern.num_pruned(full.shape, t.out_dim, s)).to(m.t.dtype)


def _setup(model_kind: str, method: str, allocation: str, pattern: str, shard: bool, seed: int = 0):
    from helpers import tiny_gpt2, tiny_llama

    from pdp_gpt2.pdp.core.attach import attach
    from pdp_gpt2.fsdp import shard_model

    model = (tiny_gpt2 if model_kind == "gpt2" else tiny_llama)(seed=seed).train()
    final = 0.5 if pattern == "2:4" else 0.75
    driver = attach(model, method, sparsity=final, allocation=allocation, pattern=pattern)
    if shard:
        shard_model(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    return model, driver, opt, final


def _steps(model, driver, opt, final: float, first: int, last: int, ramp: int, shard: bool):
    """Optimizer steps first..last of a pruning loop (PruningCallback's order), checking every one."""
    import torch.distributed as dist

    from pdp_gpt2.pdp.kernels import sharded as S

    rank = dist.get_rank() if shard else 0
    digests, comm = [], []
    for step in range(first, last + 1):
        g = torch.Generator().manual_seed(1000 * step + rank)  # each rank its own batch, as a sampler would
        x = torch.randint(0, 128, (2, 16), generator=g)
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        prev = {t.name: driver.mask_of(t).keep.clone() for t in driver.targets if hasattr(driver.mask_of(t), "keep")}
        before = dict(S.comm)
        driver.steps = step
        driver.set_sparsity(_schedule(step, final, ramp))
        comm.append({k: S.comm[k] - before[k] for k in S.comm})
        for t in driver.targets:  # bit for bit what the full weight gives
            w = driver.original(t)
            full = w.full_tensor() if shard else w.detach()
            ref = _reference(driver, t, full, prev.get(t.name))
            m = driver.mask_of(t)
            got = m.keep if hasattr(m, "keep") else m.t
            assert _bits_equal(got, ref), (step, t.name)
        digests.append(_digest(model))
    return digests, comm


def _train(model_kind: str, method: str, allocation: str, pattern: str, steps: int, shard: bool, seed: int = 0):
    """A short pruning loop on a fully_shard-ed tiny model (or a plain one); checks every step."""
    model, driver, opt, final = _setup(model_kind, method, allocation, pattern, shard, seed)
    digests, comm = _steps(model, driver, opt, final, 1, steps, steps - 2, shard)
    return model, driver, digests, comm


def _expected_zeros(driver, t) -> int:
    from pdp_gpt2.pdp.kernels import mask as M

    w = driver.original(t)
    s = driver.layer_sparsity(t.name)
    k = driver.pattern.num_pruned(w.shape, t.out_dim, s)
    if driver.pattern.name == "row":
        return k * w.shape[1 - t.out_dim]
    if hasattr(driver.pattern, "m"):
        return k * (w.numel() // driver.pattern.m)
    return M.num_pruned(w.numel(), s)


COMBOS = [("gpt2", "pdp", "layer", "unstructured"), ("gpt2", "pdp", "global", "unstructured"),
          ("gpt2", "gmp", "layer", "unstructured"), ("gpt2", "gmp", "global", "unstructured"),
          ("gpt2", "magnitude", "layer", "unstructured"), ("gpt2", "magnitude", "global", "unstructured"),
          ("gpt2", "pdp", "layer", "row"), ("gpt2", "pdp", "layer", "2:4"), ("gpt2", "gmp", "layer", "row"),
          ("llama", "pdp", "layer", "unstructured"), ("llama", "gmp", "global", "unstructured"),
          ("llama", "pdp", "layer", "row"), ("llama", "magnitude", "layer", "2:4")]


def _loop(out: Path) -> None:
    """Every combination: per-step buffers equal the full-weight ones, on every rank; finalize
    writes exactly floor(r n) zeros per tensor; final/ loads in plain transformers with the logits
    of the model gathered in memory and of the sharded model itself."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from pdp_gpt2.fsdp import gather_plain_model

    rank, world = dist.get_rank(), dist.get_world_size()
    report = {}
    for combo in COMBOS:
        model, driver, digests, comm = _train(*combo, steps=6, shard=True)
        every = [None] * world
        dist.all_gather_object(every, digests)
        assert all(d == digests for d in every), combo  # the same masks on every rank at every step
        assert len(set(digests)) > 1 or driver.one_shot, combo  # and they moved
        expected = {t.name: _expected_zeros(driver, t) for t in driver.targets}
        st = driver.stats()  # what the callback logs: from the shards, the numbers of the full weights
        for t in driver.targets:
            m = driver.mask_of(t).soft_mask(driver.original(t).full_tensor())
            assert st["layers"][t.name]["hard"] == int((m < 0.5).sum()) / m.numel(), (combo, t.name)
            assert st["layers"][t.name]["mean_mask"] == pytest.approx(float(m.mean()), rel=1e-5)
        driver.finalize()
        x = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            sharded_logits = model(input_ids=x).logits
        plain = gather_plain_model(model)
        name = "-".join(combo)
        if rank == 0:
            for tname, z in expected.items():
                assert int((plain.get_submodule(tname).weight == 0).sum()) == z, (combo, tname)
            plain.save_pretrained(out / name)
            loaded = AutoModelForCausalLM.from_pretrained(out / name).eval()
            with torch.no_grad():
                mem, disk = plain(input_ids=x).logits, loaded(input_ids=x).logits
            assert torch.equal(mem, disk), combo
            assert torch.equal(mem, sharded_logits), (combo, float((mem - sharded_logits).abs().max()))
        report[name] = {"comm_per_step": comm[-1], "zeros": sum(expected.values())}
    (out / f"ok{rank}.json").write_text(json.dumps(report))




def _grads(out: Path) -> None:
    """The masked weight's gradient reaches the shards: after one backward on 2 ranks, each
    sharded gradient is the mean of the plain model's gradients on the two ranks' batches; then
    remove() under FSDP leaves the dense model (masks become the identity)."""
    import torch.distributed as dist

    rank, report = dist.get_rank(), {}
    for combo in [("gpt2", "pdp", "layer", "unstructured"), ("llama", "gmp", "layer", "row")]:
        plain, pd, _, _ = _setup(*combo, shard=False)
        sharded, sd, _, _ = _setup(*combo, shard=True)
        for d in (pd, sd):
            d.set_sparsity(0.5)  # masks on, so the gradient goes through them
        batches = [torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(r)) for r in (0, 1)]
        sharded(input_ids=batches[rank], labels=batches[rank]).loss.backward()
        for x in batches:
            (plain(input_ids=x, labels=x).loss / 2).backward()
        worst = 0.0
        for tp, ts in zip(pd.targets, sd.targets):
            g_plain, g_sharded = pd.original(tp).grad, sd.original(ts).grad.full_tensor()
            assert g_sharded.shape == g_plain.shape and g_plain.abs().max() > 0, combo
            torch.testing.assert_close(g_sharded, g_plain, rtol=1e-5, atol=1e-7)
            worst = max(worst, float((g_sharded - g_plain).abs().max()))
        report["-".join(combo)] = worst
        x = batches[0]
        pd.remove()
        sd.remove()  # under FSDP the masks stay but become the identity: the dense model again
        from helpers import tiny_gpt2, tiny_llama

        dense = (tiny_gpt2 if combo[0] == "gpt2" else tiny_llama)(seed=0)  # no step was taken: the init
        with torch.no_grad():
            want = dense(input_ids=x).logits
            assert torch.equal(plain(input_ids=x).logits, want), combo
            assert torch.equal(sharded(input_ids=x).logits, want), combo
    (out / f"ok{rank}.json").write_text(json.dumps(report))


def _one_rank(out: Path) -> None:
    """FSDP on one rank trains and finalizes to the same weights as the plain model, bit for bit."""
    from pdp_gpt2.fsdp import gather_plain_model

    report = {}
    for combo in [("gpt2", "pdp", "layer", "unstructured"), ("llama", "gmp", "global", "unstructured")]:
        a, da, _, _ = _train(*combo, steps=6, shard=True)
        da.finalize()
        gathered = gather_plain_model(a).state_dict()
        b, db, _, _ = _train(*combo, steps=6, shard=False)
        plain = db.finalize().state_dict()
        assert set(gathered) == set(plain), combo
        differ = [k for k in plain if not torch.equal(gathered[k], plain[k])]
        assert not differ, (combo, differ[:5])
        report["-".join(combo)] = len(plain)
    (out / "ok0.json").write_text(json.dumps(report))



def _toy(out: Path) -> None:
    """The toy pattern of tests/pdp/test_extension_points.py (the one of docs/architecture.md),
    registered here and nowhere else: a sharded pruning loop checked against the full weight at
    every step (_steps), then finalize: exactly floor(r * inputs) whole input features are zero."""
    import torch.distributed as dist

    from pdp_gpt2.fsdp import gather_plain_model
    from pdp_gpt2.pdp.kernels import mask as M
    from pdp_gpt2.pdp.patterns import PATTERNS

    sys.path.insert(0, str(HERE.parent))
    from test_extension_points import Columns

    PATTERNS["columns"] = Columns
    rank, world = dist.get_rank(), dist.get_world_size()
    report = {}
    for combo in [("gpt2", "pdp", "layer", "columns"), ("gpt2", "gmp", "global", "columns"),
                  ("llama", "pdp", "layer", "columns")]:
        model, driver, digests, _ = _train(*combo, steps=6, shard=True)
        every = [None] * world
        dist.all_gather_object(every, digests)
        assert all(d == digests for d in every) and len(set(digests)) > 1, combo
        sparsity = {t.name: driver.layer_sparsity(t.name) for t in driver.targets}
        out_dims = {t.name: t.out_dim for t in driver.targets}
        driver.finalize()
        plain = gather_plain_model(model)  # the whole model on rank 0, None elsewhere
        counted = [None]
        if rank == 0:
            dead = expected = 0
            for name, s in sparsity.items():
                w, od = plain.get_submodule(name).weight, out_dims[name]
                dead_here = int((w == 0).all(dim=od).sum())
                assert int((w == 0).sum()) == dead_here * w.shape[od], (combo, name)  # whole inputs only
                dead += dead_here
                expected += M.num_pruned(w.shape[1 - od], s)
            counted = [{"dead_inputs": dead, "expected": expected}]
        dist.broadcast_object_list(counted, src=0)
        report["-".join(combo)] = counted[0]
    (out / f"ok{rank}.json").write_text(json.dumps(report))


RESUME_COMBOS = [("gpt2", "gmp", "layer", "unstructured"), ("llama", "pdp", "global", "unstructured")]


def _resume_first(out: Path) -> None:
    """Steps 1..4, a checkpoint, then the processes end at once (os._exit: no teardown)."""
    import torch.distributed as dist

    from pdp_gpt2.fsdp import save_sharded

    seen = {}
    for combo in RESUME_COMBOS:
        model, driver, opt, final = _setup(*combo, shard=True)
        first, _ = _steps(model, driver, opt, final, 1, 4, 6, True)
        save_sharded(out / ("ckpt-" + "-".join(combo)), model, opt, driver)
        seen["-".join(combo)] = first
    (out / f"first{dist.get_rank()}.json").write_text(json.dumps(seen))
    dist.barrier()
    os._exit(0)


def _resume_second(out: Path) -> None:
    """New processes: an uninterrupted run, then a model with another init that loads the
    checkpoint and finishes; both end with the same weights, bit for bit."""
    import torch.distributed as dist

    from pdp_gpt2.fsdp import gather_plain_model, load_sharded

    rank = dist.get_rank()
    seen = json.loads((out / f"first{rank}.json").read_text())
    report = {}
    for combo in RESUME_COMBOS:
        name = "-".join(combo)
        model, driver, opt, final = _setup(*combo, shard=True)
        whole, _ = _steps(model, driver, opt, final, 1, 8, 6, True)
        assert whole[:4] == seen[name], combo  # the killed run had taken the same first steps
        driver.finalize()
        a = gather_plain_model(model)
        model, driver, opt, final = _setup(*combo, shard=True, seed=1)  # other init: all must come from ckpt
        load_sharded(out / ("ckpt-" + name), model, opt, driver)
        assert driver.steps == 4 and _digest(model) == seen[name][-1], combo  # masks as they were saved
        rest, _ = _steps(model, driver, opt, final, 5, 8, 6, True)
        assert rest == whole[4:], combo
        driver.finalize()
        b = gather_plain_model(model)
        if rank == 0:
            sa, sb = a.state_dict(), b.state_dict()
            differ = [k for k in sa if not torch.equal(sa[k], sb[k])]
            assert not differ, (combo, differ[:5])
            report[name] = len(sa)
    (out / f"ok{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    import torch.distributed as dist

    case, out_dir = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        {"selection": _selection, "loop": _loop, "grads": _grads, "one_rank": _one_rank,
         "resume_first": _resume_first, "resume_second": _resume_second, "toy": _toy}[case](out_dir)
    finally:
        dist.destroy_process_group()
