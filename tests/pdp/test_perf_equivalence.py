"""The fast paths give the same results as the definitions they replace.

* (thresholds: tests/pdp/test_select.py);
* the masked weight and its gradient equal plain autograd of w * soft_mask(w), and
  the kernels never write into a tensor someone else holds (the incoming gradient);
* KernelOptions travel through attach (flush, compile), and the compiled kernels
  (slow: they compile) equal the eager ones;
* no private torch/CPython API and no environment variable in the core.
"""
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import pdp_gpt2
from pdp_gpt2 import PDPConfig
from pdp_gpt2.pdp.kernels import fused as F
from pdp_gpt2.pdp.kernels.fused import KernelOptions
from pdp_gpt2.pdp.kernels import mask as M


# ---- the masked weight and its gradient ------------------------------------------------------


def _reference(w, t, tau=0.05, mode="relative", beta=None):
    w = w.detach().clone().requires_grad_()
    out = w * M.soft_mask(w, 0.0, tau, beta=beta, tau_mode=mode, t=t)
    return w, out


@pytest.mark.parametrize("beta", [None, 3.0])
def test_masked_weight_and_gradient_equal_plain_autograd_step_after_step(beta):
    torch.manual_seed(0)
    w0 = torch.randn(64, 48) * 0.05
    t = M.threshold(w0.abs(), M.num_pruned(w0.numel(), 0.6))
    x = torch.randn(5, 64)
    outs = []
    for step in range(3):
        w_ref, out_ref = _reference(w0, t, beta=beta)
        (x @ out_ref).square().sum().backward()
        w = w0.clone().requires_grad_()
        out = F.soft_masked_weight(w, t, 0.05, "relative", beta)
        (x @ out).square().sum().backward()
        assert torch.allclose(out, out_ref, atol=1e-6)
        assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)
        outs.append((out.detach(), out_ref.detach()))  # kept: a later step must not overwrite them
        w0 = w0 + 1e-3 * torch.randn_like(w0)
    for out, ref in outs:
        assert torch.allclose(out, ref, atol=1e-6)


def test_two_forwards_one_backward_and_held_outputs():
    torch.manual_seed(0)
    w0 = torch.randn(32, 16) * 0.05
    t = M.threshold(w0.abs(), 300)
    x1 = torch.randn(3, 32, requires_grad=True)  # so the matmuls save the masked weight
    x2 = torch.randn(3, 32, requires_grad=True)
    w = w0.clone().requires_grad_()
    out1 = F.soft_masked_weight(w, t, 0.05, "relative", None)
    loss1 = (x1 @ out1).square().sum()
    out2 = F.soft_masked_weight(w, t, 0.05, "relative", None)
    assert out2.untyped_storage().data_ptr() != out1.untyped_storage().data_ptr()
    (loss1 + (x2 @ out2).square().sum()).backward()
    w_ref, out_ref = _reference(w0, t)
    ((x1.detach() @ out_ref).square().sum() + (x2.detach() @ out_ref).square().sum()).backward()
    assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)
    assert torch.equal(out1, out2)


def test_gradient_held_elsewhere_is_not_overwritten():
    torch.manual_seed(0)
    w0 = torch.randn(16, 8) * 0.05
    t = M.threshold(w0.abs(), 64)
    x = torch.randn(4, 16)
    w = w0.clone().requires_grad_()
    out = F.soft_masked_weight(w, t, 0.05, "relative", None)
    seen = []
    out.register_hook(lambda g: seen.append(g))  # keeps the incoming gradient
    (x @ out).pow(2).sum().backward()
    w_ref, out_ref = _reference(w0, t)
    out_ref.retain_grad()
    (x @ out_ref).pow(2).sum().backward()
    assert torch.allclose(seen[0], out_ref.grad, rtol=1e-4, atol=1e-6)  # the hook's tensor was left alone
    assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)
    # a gradient shared with another input (add passes one tensor to both sides)
    w = w0.clone().requires_grad_()
    other = torch.zeros_like(w0, requires_grad=True)
    (F.soft_masked_weight(w, t, 0.05, "relative", None) + other).pow(2).sum().backward()
    w_ref, out_ref = _reference(w0, t)
    other_ref = torch.zeros_like(w0, requires_grad=True)
    (out_ref + other_ref).pow(2).sum().backward()
    assert torch.allclose(other.grad, other_ref.grad, rtol=1e-4, atol=1e-6)
    assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)


def test_retain_grad_and_inference_mode_interleaved_with_training():
    torch.manual_seed(0)
    w0 = torch.randn(16, 8) * 0.05
    t = M.threshold(w0.abs(), 64)
    x = torch.randn(4, 16, requires_grad=True)
    w = w0.clone().requires_grad_()
    with torch.inference_mode():  # an evaluation before training
        F.soft_masked_weight(w, t, 0.05, "relative", None)
    for _ in range(2):
        w.grad = None
        out = F.soft_masked_weight(w, t, 0.05, "relative", None)
        out.retain_grad()
        (x @ out).pow(2).sum().backward()
        w_ref, out_ref = _reference(w0, t)
        out_ref.retain_grad()
        (x.detach() @ out_ref).pow(2).sum().backward()
        assert torch.allclose(out.grad, out_ref.grad, rtol=1e-4, atol=1e-6)
        assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)
        with torch.inference_mode():
            ev = F.soft_masked_weight(w, t, 0.05, "relative", None)
        assert torch.allclose(ev, out_ref.detach(), atol=1e-6)


def test_non_contiguous_weight_and_gradient():
    torch.manual_seed(0)
    w0 = torch.randn(24, 40) * 0.05
    t = M.threshold(w0.abs(), 500)
    g = torch.randn(40, 24).t()  # a strided incoming gradient
    w = w0.t().contiguous().t().requires_grad_()  # a non-contiguous leaf
    assert not w.is_contiguous() and not g.is_contiguous()
    out = F.soft_masked_weight(w, t, 0.05, "relative", None)
    out.backward(g)
    w_ref, out_ref = _reference(w0, t)
    out_ref.backward(g)
    assert torch.allclose(out, out_ref, atol=1e-6)
    assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)


# The core: no private torch/CPython API, no environment variable (only the CLI reads them).
_FORBIDDEN = ("torch._C", "_use_count", "getrefcount", "_storage_Use_Count", "_is_view", "os.environ",
              "os.getenv")
_CORE = Path(pdp_gpt2.__file__).parent / "pdp"


@pytest.mark.parametrize("name", ["kernels/fused.py", "kernels/recompute.py", "kernels/mask.py", "patterns/base.py",
                                  "patterns/kinds.py", "core/attach.py", "core/driver.py", "core/hard.py",
                                  "core/targets.py", "core/optim.py", "core/config.py", "methods/pdp/mask.py",
                                  "methods/pdp/driver.py", "methods/gmp/driver.py"])
def test_core_uses_no_private_api_and_no_environment(name):
    text = (_CORE / name).read_text()
    assert [f for f in _FORBIDDEN if f in text] == []


def test_cli_reads_the_kernel_switches_from_the_environment():
    from pdp_gpt2.cli.train import kernel_options

    assert kernel_options({}) == KernelOptions(compile=True, flush=True)
    assert kernel_options({"PDP_GPT2_COMPILE": "0"}) == KernelOptions(compile=False, flush=True)
    assert kernel_options({"PDP_GPT2_FLUSH": "off", "PDP_GPT2_COMPILE": "yes"}) == KernelOptions(flush=False)


def test_kernel_options_travel_through_attach_to_every_mask():
    model = nn.Sequential(nn.Linear(16, 32), nn.Linear(32, 16))
    opts = KernelOptions(compile=False, flush=False)
    pruner = pdp_gpt2.attach(model, "pdp", PDPConfig(sparsity=0.5, tau=0.02, targets=["0", "1"]), kernels=opts)
    assert [pruner.mask_of(t).kernels for t in pruner.targets] == [opts, opts]
    w = pruner.original(pruner.targets[0])
    t = pruner.mask_of(pruner.targets[0]).t
    with torch.no_grad():  # one weight deep in the pruned zone, whose gradient underflows
        w[0, 0] = 1e-3 * t
    model[0].weight.sum().backward()
    assert 0 < abs(float(w.grad[0, 0])) < F.underflow_level(torch.float32)  # not flushed: flush=False


def test_underflowing_gradients_are_flushed_and_nothing_else():
    level = F.underflow_level(torch.float32)
    assert 1e-17 < level < 2e-17
    assert F.underflow_level(torch.float16) == 0.0
    w = torch.tensor([0.001, 0.2, 0.3, 1.0], requires_grad=True)  # t = 0.25: w[0] deep in the pruned zone
    t = torch.tensor(0.25)
    g = torch.tensor([1.0, 1e-18, 1.0, 1e-3])
    F.soft_masked_weight(w, t, 0.02, "relative", None).backward(g)
    ref_w, ref = _reference(w.detach(), t, tau=0.02)
    ref.backward(g)
    assert ref_w.grad[0] != 0 and abs(ref_w.grad[0]) < level  # ~2e-22: would underflow Adam's moment
    assert w.grad[0] == 0
    assert w.grad[1] == 0 and ref_w.grad[1] != 0  # a kept weight whose gradient underflows too
    assert torch.equal(w.grad[2:], ref_w.grad[2:])


def test_flush_leaves_adamw_training_unchanged():
    """Train a model with and without the flush: the weights come out the same."""
    def train(flush: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 8))
        pruner = pdp_gpt2.attach(model, PDPConfig(sparsity=0.9, targets=["0", "2"]),
                                 kernels=KernelOptions(flush=flush))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        x, y = torch.randn(32, 64), torch.randn(32, 8)
        for _ in range(20):
            (model(x) - y).pow(2).mean().backward()
            opt.step()
            opt.zero_grad()
            pruner.step()
        return [p.detach().clone() for p in model.parameters()]

    a, b = train(True), train(False)
    for p, q in zip(a, b):
        assert torch.allclose(p, q, rtol=0, atol=1e-9)


# ---- compiling ----------------------------------------------------------------------------


@pytest.fixture
def fresh_compile():
    F.clear_compiled()
    yield
    F.clear_compiled()


def test_failed_compile_warns_once_and_falls_back(monkeypatch, fresh_compile):
    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no compiler here")
        return run

    monkeypatch.setattr(torch, "compile", broken)
    opts = KernelOptions(compile_min_numel=0)
    w = torch.randn(8, 8, requires_grad=True)
    t = M.threshold(w.detach().abs(), 32)
    with pytest.warns(RuntimeWarning, match="torch.compile"):
        out = F.soft_masked_weight(w, t, 0.05, "relative", None, opts)
    assert "failed" in F.compiled_kernels()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next call stays eager without a word
        out.sum().backward()
        F.soft_masked_weight(w, t, 0.05, "relative", None, opts)
    _, ref = _reference(w, t)
    assert torch.allclose(out, ref, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("beta", [None, 3.0])
@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_compiled_kernels_equal_the_definition(beta, mode):
    opts = KernelOptions(compile_min_numel=1 << 12)
    torch.manual_seed(0)
    w0 = torch.randn(96, 80) * 0.05  # 7680 entries: compiled
    t = M.threshold(w0.abs(), M.num_pruned(w0.numel(), 0.6))
    tau = 0.05 if mode == "relative" else 1e-4
    g = torch.randn(96, 80)
    w_ref = w0.clone().requires_grad_()
    ref = w_ref * M.soft_mask(w_ref, 0.6, tau, beta=beta, tau_mode=mode, t=t)
    (ref * g).sum().backward()
    w = w0.clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a failed compile fails the test
        out = F.soft_masked_weight(w, t, tau, mode, beta, opts)
        (out * g).sum().backward()
    assert {"forward", "backward"} <= F.compiled_kernels()
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(w.grad, w_ref.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("beta", [None, 3.0])
def test_compile_off_gives_the_same_masks_and_gradients_as_compile_on(beta):
    """KernelOptions(compile=False) vs compile=True on a model: same thresholds, same masked
    weights and gradients (compiled and eager differ at most by float rounding)."""
    def run(compile: bool):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, 256))  # 32768 entries each
        opts = KernelOptions(compile=compile, compile_min_numel=1 << 12)
        cfg = PDPConfig(sparsity=0.8, targets=["0", "2"], improved_masking=beta is not None, beta=beta or 5.0)
        pruner = pdp_gpt2.attach(model, cfg, kernels=opts)
        x = torch.randn(8, 256, generator=torch.Generator().manual_seed(1))
        model(x).square().mean().backward()
        pruner.step()
        return ([pruner.mask_of(t).t.clone() for t in pruner.targets],
                [t.module.weight.detach().clone() for t in pruner.targets],
                [pruner.original(t).grad.clone() for t in pruner.targets])

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        t_on, w_on, g_on = run(True)
    t_off, w_off, g_off = run(False)
    assert {"forward", "backward", "block_counts"} <= F.compiled_kernels()
    assert all(torch.equal(a, b) for a, b in zip(t_on, t_off))  # thresholds: exact
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(w_on, w_off))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-9) for a, b in zip(g_on, g_off))


@pytest.mark.slow
def test_inside_a_callers_torch_compile():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 4))
    pdp_gpt2.attach(model, PDPConfig(sparsity=0.8, targets=["0", "2"]))
    x = torch.randn(8, 32)
    ref = model(x)
    ref.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    out = torch.compile(model)(x)
    out.sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    for p, g in zip(model.parameters(), grads):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)
