"""Movement pruning (pdp/methods/movement/driver.py): the straight-through gradients and an optimizer step worked
by hand on a 2x3 layer, the exact top-k of the scores (ties, -0.0, dtypes, N:M), why the scores
need no learning rate of their own (bit for bit), a tiny GPT-2 end to end, the CLI, and (slow,
torchrun) DDP and FSDP2.

The distributed cases launch this file under torchrun (``python -m torch.distributed.run ...
tests/pdp/test_movement.py <case> <out_dir>``), as tests/pdp/test_fsdp.py does; every rank checks
its own results and writes ``ok<rank>.json``."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import pdp_gpt2
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.methods.movement.driver import order_keys
from pdp_gpt2.pdp.core.targets import find_targets
from pdp_gpt2.pdp.kernels.mask import in_last

from helpers import ROOT, TESTS, tiny_gpt2, tiny_llama, train_tiny

HERE = Path(__file__).resolve()

W = [[1.0, -2.0, 3.0], [-4.0, 5.0, -6.0]]
X = [[1.0, 0.0, 2.0]]  # one input row
U = [[1.0, -1.0]]  # dL/dy: the loss is (y * U).sum()
SCORES = [[0.3, 0.1, -0.2], [0.5, -0.4, 0.0]]


def _layer(scores=SCORES, sparsity=0.5):
    """nn.Linear(3, 2) with W, movement masks at ``sparsity`` from the given scores."""
    model = nn.Sequential(nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(W))
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=sparsity))
    mask = driver.mask_of(driver.targets[0])
    with torch.no_grad():
        mask.scores.copy_(torch.tensor(scores))
    driver.set_sparsity(sparsity)
    return model, driver, mask


def test_the_straight_through_gradients_by_hand():
    model, driver, mask = _layer()
    # floor(0.5 * 6) = 3 pruned: the three lowest scores, -0.4 (1,1), -0.2 (0,2) and 0.0 (1,2)
    assert mask.keep.tolist() == [[True, True, False], [True, False, False]]
    y = model(torch.tensor(X))
    assert y.tolist() == [[1.0, -4.0]]  # x . (W * M) per output: 1*1 + 0*(-2) + 2*0 ; 1*(-4) + 0 + 0
    (y * torch.tensor(U)).sum().backward()
    # dL/dW' = U^T x = [[1, 0, 2], [-1, 0, -2]]
    w = driver.original(driver.targets[0])
    assert w.grad.tolist() == [[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]]  # dL/dW' * M: pruned weights get none
    assert mask.scores.grad.tolist() == [[1.0, 0.0, 6.0], [4.0, 0.0, 12.0]]  # dL/dW' * W: every entry


def test_an_optimizer_step_moves_the_scores_by_minus_lr_w_dl_dw():
    model, driver, mask = _layer()
    opt = torch.optim.SGD([mask.scores], lr=0.5)
    (model(torch.tensor(X)) * torch.tensor(U)).sum().backward()
    opt.step()
    # S - 0.5 * [[1, 0, 6], [4, 0, 12]]: the pruned (0,2) and (1,2) fall further, (1,1) got no signal
    by_hand = torch.tensor(SCORES) - 0.5 * torch.tensor([[1.0, 0.0, 6.0], [4.0, 0.0, 12.0]])
    assert torch.equal(mask.scores.detach(), by_hand)
    assert torch.allclose(mask.scores.detach(), torch.tensor([[-0.2, 0.1, -3.2], [-1.5, -0.4, -6.0]]))
    driver.step()  # the mask follows: now -6.0, -3.2, -1.5 are the lowest
    assert mask.keep.tolist() == [[True, True, False], [False, True, False]]

    model, driver, mask = _layer()  # Adam's first step: lr * g / (|g| + eps), g = dL/dS
    opt = torch.optim.Adam([mask.scores], lr=0.1, eps=1e-8)
    (model(torch.tensor(X)) * torch.tensor(U)).sum().backward()
    g = mask.scores.grad.clone()
    opt.step()
    expected = torch.tensor(SCORES) - 0.1 * g / (g.abs() + 1e-8)
    assert torch.allclose(mask.scores.detach(), expected, rtol=0, atol=1e-7)
    assert mask.scores[0, 1].item() == pytest.approx(0.1) and mask.scores[0, 0].item() == pytest.approx(0.2)


@pytest.mark.parametrize("conv1d", [False, True])  # Linear (out, in), Conv1D (in, out)
def test_gradients_equal_the_papers_straight_through_equations(conv1d):
    """Movement pruning as the paper states it (Sanh et al. 2020, section 3 and eq. 4; emmental's TopK
    binarizer), re-derived here on a layer with correlated inputs: W' = W * M with M = Top_v(S) keeping the
    highest scores (v = 1 - r, r n whole), and with the straight-through estimator dM/dS = 1,
    dL/dS = dL/dW' * W and dL/dW = dL/dW' * M.  For y = x W'^T + b (Linear) and L = 1/2 ||y - t||^2,
    dL/dW' = (y - t)^T x; Conv1D (y = x W' + b) is its transpose."""
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(7)
    d_in, d_out, r = 24, 10, 0.6  # r n = 144, whole
    x = torch.randn(32, d_in, generator=g) @ torch.randn(d_in, d_in, generator=g)  # correlated inputs
    target = torch.randn(32, d_out, generator=g)
    layer = Conv1D(d_out, d_in) if conv1d else nn.Linear(d_in, d_out)
    model = nn.Sequential(layer)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
    w, b = layer.weight.detach().clone(), layer.bias.detach().clone()
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=r))
    mask = driver.mask_of(driver.targets[0])
    scores = torch.randn(w.shape, generator=g)
    with torch.no_grad():
        mask.scores.copy_(scores)
    driver.set_sparsity(r)
    # the paper's top-v: the int(v n) highest scores stay
    top = torch.zeros(w.numel(), dtype=torch.bool)
    top[torch.argsort(scores.reshape(-1), descending=True)[:int((1 - r) * w.numel() + 1e-9)]] = True
    m_ref = top.view_as(w).float()
    assert torch.equal(mask.keep.float(), m_ref)
    y = model(x)
    (0.5 * ((y - target) ** 2).sum()).backward()
    w_masked = w * m_ref
    y_ref = x @ (w_masked if conv1d else w_masked.t()) + b
    grad_w_masked = x.t() @ (y_ref - target) if conv1d else (y_ref - target).t() @ x
    assert torch.allclose(y, y_ref, rtol=1e-5, atol=1e-4)
    assert torch.allclose(mask.scores.grad, grad_w_masked * w, rtol=1e-4, atol=1e-3)
    assert torch.allclose(driver.original(driver.targets[0]).grad, grad_w_masked * m_ref, rtol=1e-4, atol=1e-3)
    assert (mask.scores.grad[m_ref == 0] != 0).all()  # a pruned weight's score still moves


def test_order_keys_order_like_the_scores():
    x = torch.tensor([-math.inf, -1e30, -1.0, -1e-40, -0.0, 0.0, 1e-40, 1e-3, 1.0, 1e30, math.inf])
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        v = x.to(dtype)
        k = order_keys(v)
        assert (k >= 0).all() and k.dtype == (torch.float64 if dtype == torch.float32 else torch.float32)
        for i in range(len(v) - 1):  # equal scores (±0, float16's flushed extremes) get equal keys
            assert (k[i] < k[i + 1]) if v[i] < v[i + 1] else (k[i] == k[i + 1]), (dtype, i)
    with pytest.raises(TypeError, match="float64"):
        order_keys(torch.zeros(3, dtype=torch.float64))


def _scores_with_ties(shape, gen, dtype):
    s = torch.randn(shape, generator=gen)
    s[: shape[0] // 3] = torch.round(s[: shape[0] // 3] * 4) / 4  # a third in a few levels: many ties
    s.view(-1)[::7] = 0.0
    s.view(-1)[3::11] = -0.0
    return s.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_mask_is_the_exact_top_k_of_the_scores(dtype):
    """floor(r n) lowest scores pruned, ties by flat index (mask.hard_mask_from_scores on the scores,
    the highest kept): a short tensor (sorted whole) and a long one (bracketed selection)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(13, 7), nn.Linear(128, 160)).to(dtype)  # 91 and 20,480 entries
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.99))
    gen = torch.Generator().manual_seed(1)
    for r in (0.0, 0.1, 0.5, 0.9, 0.99):
        for t in driver.targets:
            with torch.no_grad():
                driver.mask_of(t).scores.copy_(_scores_with_ties(driver.mask_of(t).scores.shape, gen, dtype))
        driver.set_sparsity(r)
        for t in driver.targets:
            s, keep = driver.mask_of(t).scores.detach(), driver.mask_of(t).keep
            k = M.num_pruned(s.numel(), r)
            assert int((~keep).sum()) == k, (r, t.name)
            assert torch.equal(keep, M.hard_mask_from_scores(s.float(), k)), (r, t.name)


def test_n_m_keeps_the_highest_scores_of_each_group():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 8))
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.5, pattern="2:4"))
    t = driver.targets[0]
    mask = driver.mask_of(t)
    with torch.no_grad():
        mask.scores.copy_(_scores_with_ties((8, 16), torch.Generator().manual_seed(2), torch.float32))
    driver.set_sparsity(0.5)
    groups = in_last(mask.scores.detach(), t.out_dim).reshape(-1, 4)
    expected = torch.ones_like(groups, dtype=torch.bool)
    expected.scatter_(1, torch.sort(groups, dim=1, stable=True).indices[:, :2], False)
    assert torch.equal(in_last(mask.keep, t.out_dim).reshape(-1, 4), expected)


def test_patterns_of_several_weights_and_float64_are_refused_at_attach():
    with pytest.raises(UsageError, match="method movement prunes only unstructured, N:M, neurons, heads patterns, not 'row'"):
        pdp_gpt2.attach(tiny_gpt2(), "movement", PDPConfig(sparsity=0.5, pattern="row"))
    with pytest.raises(UsageError, match="float32, bfloat16 or float16"):
        pdp_gpt2.attach(tiny_gpt2().double(), "movement", PDPConfig(sparsity=0.5))


def _ids(step: int, rank: int = 0):
    g = torch.Generator().manual_seed(1000 * step + rank)
    x = torch.randint(0, 128, (2, 16), generator=g)
    return x


def _run(groups, steps=8, ramp=4, fused=False, **size):
    """A tiny GPT-2 pruned to 0.75 along the cubic schedule with AdamW; ``groups(model)`` makes its
    parameter groups.  Returns (model, driver, [keep-masks after each step])."""
    model = tiny_gpt2(**size).train()
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.75))
    sched = pdp_gpt2.PruningSchedule(driver, steps, ramp_steps=ramp)
    opt = torch.optim.AdamW(groups(model), lr=1e-3, weight_decay=0.0, fused=fused)
    masks = []
    for step in range(1, steps + 1):
        x = _ids(step)
        model(input_ids=x, labels=x).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # what Trainer does: scores included
        opt.step()
        opt.zero_grad()
        sched.step()
        masks.append(torch.cat([driver.mask_of(t).keep.reshape(-1) for t in driver.targets]))
    return model, driver, masks


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_the_scores_need_no_learning_rate_of_their_own(fused):
    """Emmental trains the scores in their own group at a far higher learning rate.  From S = 0 the
    top-k reads only their order and an Adam step is lr times a function of the gradients, so
    scores at 1024x the learning rate are 1024x the scores, with the same masks and weights, bit
    for bit (the design decision in pdp/methods/movement/driver.py's docstring)."""
    def split(model):  # emmental's groups: the scores at their own learning rate
        scores = [p for n, p in model.named_parameters() if n.endswith(".scores")]
        rest = [p for n, p in model.named_parameters() if not n.endswith(".scores")]
        return [{"params": rest}, {"params": scores, "lr": 1024 * 1e-3}]

    size = dict(n_layer=1, n_embd=32)
    a, da, ma = _run(lambda m: m.parameters(), steps=6, ramp=3, fused=fused, **size)
    b, db, mb = _run(split, steps=6, ramp=3, fused=fused, **size)
    assert all(torch.equal(x, y) for x, y in zip(ma, mb))
    assert len({tuple(m.tolist()) for m in ma[3:]}) > 1  # the masks kept moving after the ramp
    for ta, tb in zip(da.targets, db.targets):
        sa, sb = da.mask_of(ta).scores.detach(), db.mask_of(tb).scores.detach()
        assert torch.equal(sb, 1024 * sa) and sa.abs().max() > 0
    weights = [(n, p, q) for (n, p), q in zip(a.named_parameters(), b.parameters()) if not n.endswith(".scores")]
    assert all(torch.equal(p, q) for _, p, q in weights), [n for n, p, q in weights if not torch.equal(p, q)]


def test_tiny_gpt2_end_to_end_exact_zeros_plain_keys_and_reload(tmp_path):
    from transformers import AutoModelForCausalLM

    model, driver, masks = _run(lambda m: m.parameters())
    names = [n for n, _ in model.named_parameters() if n.endswith(".scores")]
    assert len(names) == len(driver.targets) == 8  # one per block projection (Conv1D), trained
    assert "transformer.h.0.attn.c_attn.parametrizations.weight.0.scores" in names
    final_keep = {}
    for t in driver.targets:  # what finalize must keep: the top-k of the last scores
        s = driver.mask_of(t).scores.detach()
        final_keep[t.name] = M.hard_mask_from_scores(s, M.num_pruned(s.numel(), 0.75))
        w = driver.original(t).detach()
        assert int(((w == 0) & final_keep[t.name]).sum()) == 0  # no kept weight is zero by chance
    driver.finalize()
    assert sorted(model.state_dict()) == sorted(tiny_gpt2().state_dict())
    for t in find_targets(model):
        w = t.module.weight
        assert torch.equal(w != 0, final_keep[t.name]), t.name
        assert int((w == 0).sum()) == M.num_pruned(w.numel(), 0.75)
        assert not torch.signbit(w[w == 0]).any()  # +0.0, not the product's -0.0
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    x = _ids(99)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, loaded(input_ids=x).logits)


def test_remove_is_the_inverse_of_attach():
    model, fresh = tiny_gpt2(), tiny_gpt2()
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.75))
    driver.set_sparsity(0.75)
    assert any(n.endswith(".scores") for n, _ in model.named_parameters())
    driver.remove()
    a, b = model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_under_bf16_autocast_the_gradients_stay_float32_and_straight_through():
    model = tiny_gpt2(n_layer=1).train()
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.5))
    with torch.no_grad():
        for t in driver.targets:
            driver.mask_of(t).scores.copy_(torch.randn(driver.mask_of(t).scores.shape))
    driver.set_sparsity(0.5)
    x = _ids(0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=x, labels=x).loss
    loss.backward()
    for t in driver.targets:
        m, w = driver.mask_of(t), driver.original(t)
        assert m.scores.grad.dtype == w.grad.dtype == torch.float32
        # the same upstream gradient g: dL/dW = g * M and dL/dS = g * W, so they agree where M = 1
        assert torch.equal(m.scores.grad[m.keep], (w.grad * w.detach())[m.keep])
        assert (w.grad[~m.keep] == 0).all() and (m.scores.grad[~m.keep] != 0).any()


def test_quantized_movement_masks_and_fake_quantizes():
    model = nn.Sequential(nn.Linear(16, 8))
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.5, quantize=True, bits=4))
    mask = driver.mask_of(driver.targets[0])
    with torch.no_grad():
        mask.scores.copy_(torch.randn(8, 16, generator=torch.Generator().manual_seed(3)))
    driver.set_sparsity(0.5)
    w = driver.original(driver.targets[0]).detach()
    assert torch.equal(model[0].weight, M.fake_quant(w * mask.keep, 4, 0))
    driver.finalize()
    assert int((model[0].weight == 0).sum()) >= 64


@pytest.mark.slow  # a 12-step training run with evaluations (~20 s on a busy 2-core machine)
def test_cli_train_movement(tmp_path, tiny_assets):
    from transformers import AutoModelForCausalLM

    rc, out = train_tiny(tmp_path, tiny_assets, "--method", "movement", "--sparsity", "0.75")
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "movement" and s["train_steps"] == 12
    assert s["sparsity_actual"] == pytest.approx(0.75, abs=1e-3)
    m = AutoModelForCausalLM.from_pretrained(out / "final")
    assert not any("parametrizations" in k or "scores" in k for k in m.state_dict())
    for name, d in s["layers"].items():
        w = m.get_submodule(name).weight
        assert int((w == 0).sum()) == d["zeros"] == int(0.75 * w.numel()), name
    manifest = json.loads((out / "final" / "pdp_pruning.json").read_text())
    assert manifest["method"] == "movement"


# ---- DDP and FSDP2 (torchrun, 2 CPU ranks) ----------------------------------------------------


def _env() -> dict:
    path = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(TESTS)) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}


def launch(case: str, out: Path, nproc: int = 2, timeout: int = 300) -> list[dict]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(HERE), case, str(out)]
    r = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:] + r.stderr[-6000:])
    return [json.loads((out / f"ok{i}.json").read_text()) for i in range(nproc)]


@pytest.mark.slow  # multi-process (torchrun, 2 ranks)
def test_ddp_and_fsdp2(tmp_path):
    res = launch("distributed", tmp_path)
    assert res[0] == res[1]
    assert res[0]["ddp"]["moved"]
    # 3/4 of the block weights: gpt2 2 x (64x192 + 64x64 + 2 x 64x256), llama 2 x (4 x 64x64 + 3 x 64x128)
    assert res[0]["fsdp"] == {"gpt2": 73728, "llama": 61440}


def _digest(tensors) -> str:
    import hashlib

    h = hashlib.sha256()
    for x in tensors:
        h.update(x.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _same_on_every_rank(value) -> bool:
    import torch.distributed as dist

    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, value)
    return all(v == value for v in every)


def _ddp(rank: int) -> dict:
    """Each rank its own batches: the scores' gradients are averaged by DDP like any parameter's,
    so scores and masks stay equal on every rank."""
    model = tiny_gpt2().train()
    driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.75))  # masks before the wrapper
    ddp = nn.parallel.DistributedDataParallel(model)
    sched = pdp_gpt2.PruningSchedule(driver, 6, ramp_steps=4)
    opt = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.0)
    digests = []
    for step in range(1, 7):
        x = _ids(step, rank)
        ddp(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        masks = [driver.mask_of(t) for t in driver.targets]
        digests.append(_digest([m.scores for m in masks] + [m.keep for m in masks]))
    assert _same_on_every_rank(digests)
    driver.finalize()
    for t in find_targets(model):
        assert int((t.module.weight == 0).sum()) == M.num_pruned(t.module.weight.numel(), 0.75)
    return {"moved": len(set(digests)) == len(digests)}


def _fsdp(rank: int, out: Path) -> dict:
    """fully_shard shards the scores like any parameter; after every step each keep-mask is the exact
    top-k of the whole scores (gathered here only to check), and the gathered final model is plain."""
    from transformers import AutoModelForCausalLM

    from pdp_gpt2.fsdp import gather_plain_model, shard_model

    zeros = {}
    for kind, make in (("gpt2", tiny_gpt2), ("llama", tiny_llama)):
        model = make().train()
        driver = pdp_gpt2.attach(model, "movement", PDPConfig(sparsity=0.75))
        shard_model(model)
        sched = pdp_gpt2.PruningSchedule(driver, 6, ramp_steps=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0, foreach=False)
        digests = []
        for step in range(1, 7):
            x = _ids(step, rank)
            model(input_ids=x, labels=x).loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            for t in driver.targets:
                m = driver.mask_of(t)
                full = m.scores.full_tensor().detach()
                k = M.num_pruned(full.numel(), driver.layer_sparsity(t.name))
                assert torch.equal(m.keep, M.hard_mask_from_scores(full, k)), (kind, step, t.name)
            digests.append(_digest([driver.mask_of(t).keep for t in driver.targets]))
        assert _same_on_every_rank(digests) and len(set(digests)) > 1, kind
        for t in driver.targets:  # the scores' gradients reached their shards
            assert driver.mask_of(t).scores.full_tensor().abs().min() > 0, (kind, t.name)
        driver.finalize()
        plain = gather_plain_model(model)
        if rank == 0:
            assert not any("parametrizations" in k for k in plain.state_dict())
            n = 0
            for t in find_targets(plain):
                w = t.module.weight
                assert int((w == 0).sum()) == M.num_pruned(w.numel(), 0.75), (kind, t.name)
                n += int((w == 0).sum())
            plain.save_pretrained(out / kind)
            AutoModelForCausalLM.from_pretrained(out / kind)
            zeros[kind] = n
    return zeros


def _distributed(out: Path) -> None:
    import torch.distributed as dist

    rank = dist.get_rank()
    report = {"ddp": _ddp(rank), "fsdp": _fsdp(rank, out)}
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, report["fsdp"])
    report["fsdp"] = every[0]  # rank 0 counted the zeros of the plain model
    (out / f"ok{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    import torch.distributed as dist

    case, out_dir = sys.argv[1], Path(sys.argv[2])
    dist.init_process_group("gloo")
    try:
        {"distributed": _distributed}[case](out_dir)
    finally:
        dist.destroy_process_group()
