"""Masked weights recomputed in backward instead of kept from forward (pdp/kernels/recompute.py).

The claims: gradients are bit-identical to keeping the masked weight; the forward's
copy is really gone before backward; a threshold refresh between forward and
backward cannot change the gradient; double backward still works; nothing is
armed where it must not be (no_grad, activation checkpointing, recompute=False);
and remove/finalize take every hook off.
"""
from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
from helpers import tiny_gpt2, tiny_llama
from torch import nn

import pdp_gpt2
from pdp_gpt2 import PDPConfig
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.pdp.methods.pdp.mask import PDPMask

# compile_min_numel=1024 puts the tiny models' weights through the compiled kernels too
_ON = KernelOptions(recompute=True, compile=False, recompute_min_bytes=0)  # tiny models: recompute all the same
_OFF = KernelOptions(recompute=False, compile=False)


def _ids(vocab=128, seed=1):
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(seed))


def _grads(model, kernels, cfg=None, between=None):
    """Gradients of one LM loss with masks attached under ``kernels``; ``between(driver)`` runs
    after forward, before backward."""
    model = copy.deepcopy(model)
    driver = pdp_gpt2.attach(model, cfg or PDPConfig(sparsity=0.8), kernels=kernels)
    ids = _ids()
    loss = model(input_ids=ids, labels=ids).loss
    if between is not None:
        between(driver)
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None], driver


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["conv1d", "linear"])
@pytest.mark.parametrize("cfg", [PDPConfig(sparsity=0.8), PDPConfig(sparsity=0.8, improved_masking=True),
                                 PDPConfig(sparsity=0.8, quantize=True, bits=4)],
                         ids=["plain", "improved", "q4"])
def test_gradients_are_bit_identical_to_keeping_the_masked_weight(build, cfg):
    model = build()
    ref, _ = _grads(model, _OFF, cfg)
    got, driver = _grads(model, _ON, cfg)
    assert len(driver._recompute) == len(driver.targets) > 0
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.slow  # torch.compile: ~20 s of compilation on a 2-core machine
def test_compiled_kernels_recompute_bit_identically():
    model = tiny_gpt2()
    ref, _ = _grads(model, KernelOptions(recompute=False, compile_min_numel=1024))
    got, _ = _grads(model, KernelOptions(recompute=True, compile_min_numel=1024, recompute_min_bytes=0))
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


def _forward_outputs(model, kernels):
    """Weak references to every masked weight the forward made, and the count of mask runs
    in forward and in backward."""
    model = copy.deepcopy(model)
    driver = pdp_gpt2.attach(model, PDPConfig(sparsity=0.8), kernels=kernels)
    refs, runs = [], {"n": 0}
    for t in driver.targets:
        t.module.parametrizations.weight[0].register_forward_hook(lambda m, a, out: refs.append(weakref.ref(out)))
    real = PDPMask._output

    def counting(self, *args):
        runs["n"] += 1
        return real(self, *args)

    PDPMask._output = counting
    try:
        ids = _ids()
        loss = model(input_ids=ids, labels=ids).loss
        gc.collect()
        alive = sum(r() is not None for r in refs)
        in_forward = runs["n"]
        loss.backward()
    finally:
        PDPMask._output = real
    return len(driver.targets), alive, in_forward, runs["n"] - in_forward


def test_forward_copies_are_freed_before_backward_and_recomputed_once_each():
    n, alive, fwd, bwd = _forward_outputs(tiny_gpt2(), _ON)
    assert (alive, fwd, bwd) == (0, n, n)
    n, alive, fwd, bwd = _forward_outputs(tiny_gpt2(), _OFF)
    assert (alive, fwd, bwd) == (n, n, 0)  # kept alive by the consumers, never recomputed


def test_a_threshold_refresh_between_forward_and_backward_does_not_change_the_gradient():
    model = tiny_gpt2()
    ref, _ = _grads(model, _OFF, between=lambda d: d.set_sparsity(0.3))
    got, _ = _grads(model, _ON, between=lambda d: d.set_sparsity(0.3))
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    tau_ref, _ = _grads(model, _OFF, between=lambda d: d.set_tau(0.5))
    tau_got, _ = _grads(model, _ON, between=lambda d: d.set_tau(0.5))
    assert all(torch.equal(a, b) for a, b in zip(tau_got, tau_ref))


def test_double_backward_through_a_recomputed_weight():
    def second_order(kernels):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
        pdp_gpt2.attach(model, PDPConfig(sparsity=0.5, targets=["0", "2"]), kernels=kernels)
        x = torch.randn(4, 16)
        g, = torch.autograd.grad(model(x).sum(), model[0].parametrizations.weight.original, create_graph=True)
        g.pow(2).sum().backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref, got = second_order(_OFF), second_order(_ON)
    assert len(got) == len(ref) == 3 and all(torch.allclose(a, b, rtol=1e-6, atol=1e-9) for a, b in zip(got, ref))
    assert any(a.abs().sum() > 0 for a in got)


def test_nothing_is_armed_under_no_grad_or_activation_checkpointing():
    model = tiny_gpt2()
    driver = pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.8), kernels=_ON)
    seen = []
    for h in driver._recompute:  # runs after the RecomputeHooks' own hook on the mask
        h.mask.register_forward_hook(lambda m, a, o, h=h: seen.append(h._local.ctx is not None))
    with torch.no_grad():
        driver.model(input_ids=_ids())
    assert seen == [False] * len(driver.targets)
    driver.model(input_ids=_ids())
    assert seen[len(driver.targets):] == [True] * len(driver.targets)

    ckpt = copy.deepcopy(model).train()
    ckpt.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ref, _ = _grads(ckpt, _OFF)
    got, driver = _grads(ckpt, _ON)
    assert all(torch.equal(a, b) for a, b in zip(got, ref))
    assert driver._recompute[0].skip() is True


def test_recompute_off_installs_nothing_and_remove_finalize_take_every_hook_off():
    def hooks(model):
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    model = tiny_gpt2()
    assert hooks(model) == 0
    assert pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.8), kernels=_OFF)._recompute == []
    for undo in ("remove", "finalize"):
        m = copy.deepcopy(model)
        driver = pdp_gpt2.attach(m, PDPConfig(sparsity=0.8), kernels=_ON)
        assert hooks(m) == 3 * len(driver.targets)
        getattr(driver, undo)()
        assert hooks(m) == 0 and driver._recompute == []


@pytest.mark.parametrize("method", ["gmp", "magnitude", "movement"])
def test_hard_mask_baselines_recompute_bit_identically(method):
    def grads(kernels):
        model = copy.deepcopy(tiny_gpt2())
        driver = pdp_gpt2.attach(model, method, PDPConfig(sparsity=0.8), kernels=kernels)
        driver.set_sparsity(0.8)
        ids = _ids()
        model(input_ids=ids, labels=ids).loss.backward()
        return driver, [p.grad.clone() for p in model.parameters() if p.grad is not None]

    (d_off, ref), (d_on, got) = grads(_OFF), grads(_ON)
    assert d_off._recompute == [] and len(d_on._recompute) == len(d_on.targets) > 0
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("kernels", [_OFF, _ON], ids=["kept", "recomputed"])
def test_a_hard_mask_changed_between_forward_and_backward_is_refused_as_before(kernels):
    model = copy.deepcopy(tiny_gpt2())
    driver = pdp_gpt2.attach(model, "gmp", PDPConfig(sparsity=0.8), kernels=kernels)
    driver.set_sparsity(0.5)
    ids = _ids()
    loss = model(input_ids=ids, labels=ids).loss
    driver.set_sparsity(0.8)  # rewrites every keep buffer in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("kernels", [pytest.param(_ON, id="eager"),
                                     pytest.param(KernelOptions(recompute=True, compile_min_numel=1024, recompute_min_bytes=0), id="compiled",
                                                  marks=pytest.mark.slow)])  # torch.compile: seconds
def test_the_gradient_is_written_into_the_recomputed_weight(kernels):
    model = copy.deepcopy(tiny_gpt2())
    driver = pdp_gpt2.attach(model, PDPConfig(sparsity=0.8), kernels=kernels)
    made_in_backward, real = [], PDPMask._output

    def recording(self, *args):
        out = real(self, *args)
        if not torch.is_grad_enabled():  # the recompute (backward runs without grad mode)
            made_in_backward.append(out.data_ptr())
        return out

    PDPMask._output = recording
    try:
        ids = _ids()
        model(input_ids=ids, labels=ids).loss.backward()
    finally:
        PDPMask._output = real
    grads = [driver.original(t).grad.data_ptr() for t in driver.targets]
    assert len(made_in_backward) == len(grads) and sorted(grads) == sorted(made_in_backward)


def test_retain_graph_twice_and_accumulation_match_keeping_the_weight():
    def twice(kernels):
        model = copy.deepcopy(tiny_gpt2())
        pdp_gpt2.attach(model, PDPConfig(sparsity=0.8), kernels=kernels)
        ids = _ids()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward(retain_graph=True)
        loss.backward()
        loss2 = model(input_ids=_ids(seed=2), labels=_ids(seed=2)).loss  # a second micro-batch
        loss2.backward()
        return [p.grad.clone() for p in model.parameters() if p.grad is not None]

    ref, got = twice(_OFF), twice(_ON)
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))


def test_a_gradient_held_by_the_caller_is_not_written_into():
    model = copy.deepcopy(tiny_gpt2())
    driver = pdp_gpt2.attach(model, PDPConfig(sparsity=0.8), kernels=_ON)
    held = []
    mod = driver.targets[0].module

    def hold(m, args, out):  # the caller keeps the gradient of the masked weight
        out.register_hook(lambda g: held.append((g, g.clone())))

    mod.parametrizations.weight[0].register_forward_hook(hold)
    ids = _ids()
    model(input_ids=ids, labels=ids).loss.backward()
    (g, copy_at_the_time), = held
    assert torch.equal(g, copy_at_the_time)


def test_a_saved_tensor_without_plain_storage_passes_through():
    hooks = pdp_gpt2.attach(tiny_gpt2(), PDPConfig(sparsity=0.8), kernels=_ON)._recompute[0]
    hooks._local.outs = []
    sparse = torch.eye(3).to_sparse()
    assert hooks._pack(sparse) is sparse


def test_recompute_is_for_targets_whose_weights_take_memory_worth_saving():
    model = tiny_gpt2()  # 2 layers of 64: 0.4 MB of target weights
    size = sum(t.module.weight.numel() * 4 for t in pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.5),
                                                                         kernels=_OFF).targets)
    kept = pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.5))  # the default threshold: 32 MiB
    assert not kept.recomputing and kept._recompute == [] and size < KernelOptions().recompute_min_bytes
    at = pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.5), kernels=KernelOptions(recompute_min_bytes=size))
    assert at.recomputing and len(at._recompute) == len(at.targets)
    above = KernelOptions(recompute_min_bytes=size + 1)
    assert not pdp_gpt2.attach(copy.deepcopy(model), PDPConfig(sparsity=0.5), kernels=above).recomputing
