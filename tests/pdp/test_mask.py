"""Tier 1: the PDP math on hand-computed tensors."""
import math

import pytest
import torch

from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.kernels.fused import soft_masked_weight


def test_num_pruned_is_floor_and_robust_to_float_noise():
    assert M.num_pruned(10, 0.9) == 9  # 0.9 * 10 = 8.999999999999998 in floats
    assert M.num_pruned(10, 0.95) == 9
    assert M.num_pruned(7, 0.5) == 3
    assert M.num_pruned(5, 0.0) == 0


def test_threshold_is_midpoint_between_largest_pruned_and_smallest_kept():
    w = torch.tensor([0.1, -0.4, 0.2, 0.8, -0.3])
    # |w| sorted: 0.1 0.2 0.3 0.4 0.8 ; k=2 -> midpoint(0.2, 0.3) = 0.25
    assert M.threshold(w.abs(), 2).item() == pytest.approx(0.25)
    assert M.threshold(w.abs(), 4).item() == pytest.approx(0.6)
    assert M.threshold(w.abs(), 0).item() == 0.0


def test_threshold_with_ties_at_the_cut():
    a = torch.tensor([0.5, 0.5, 0.5, 1.0])
    assert M.threshold(a, 2).item() == pytest.approx(0.5)  # both neighbours are 0.5
    assert M.threshold(a, 3).item() == pytest.approx(0.75)


def test_threshold_carries_no_gradient():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    assert not M.threshold(w.abs(), 2).requires_grad


def test_soft_mask_values_relative_tau():
    w = torch.tensor([0.1, 0.2, 0.3, 0.4])
    t = 0.25  # k = 2 at sparsity 0.5
    m = M.soft_mask(w, 0.5, tau=0.5)
    expected = [1 / (1 + math.exp(-((x / t) ** 2 - 1) / 0.5)) for x in [0.1, 0.2, 0.3, 0.4]]
    assert torch.allclose(m, torch.tensor(expected), atol=1e-6)
    # the paper's two-way softmax form is the same thing (absolute mode, x = w^2 - t^2)
    mabs = M.soft_mask(w, 0.5, tau=0.01, tau_mode="absolute")
    sm = torch.softmax(torch.stack([torch.full_like(w, t * t), w * w]) / 0.01, dim=0)[1]
    assert torch.allclose(mabs, sm, atol=1e-6)


def test_relative_mask_is_invariant_to_weight_scale():
    w = torch.randn(1000)
    assert torch.allclose(M.soft_mask(w, 0.7, 0.02), M.soft_mask(w * 13.0, 0.7, 0.02), atol=1e-5)


def test_soft_mask_at_zero_sparsity_is_exactly_one():
    w = torch.randn(50)
    assert torch.equal(M.soft_mask(w, 0.0, 0.02), torch.ones(50))


def test_default_tau_band_is_three_percent_around_threshold():
    # m in (0.05, 0.95)  <=>  |x / tau| < ln(19)  <=>  |w|/t in sqrt(1 -+ tau ln 19)
    lo, hi = math.sqrt(1 - 0.02 * math.log(19)), math.sqrt(1 + 0.02 * math.log(19))
    t = torch.tensor(2.0)
    w = torch.tensor([lo * 2 * 0.999, lo * 2 * 1.001, hi * 2 * 0.999, hi * 2 * 1.001])
    m = M.soft_mask(w, 0.0, 0.02, t=t)
    assert m[0] < 0.05 < m[1] and m[2] < 0.95 < m[3]
    assert lo == pytest.approx(0.970, abs=1e-3) and hi == pytest.approx(1.029, abs=1e-3)


def test_gradient_through_mask_matches_paper_formula():
    w = torch.tensor([0.1, -0.22, 0.26, 0.4], requires_grad=True)
    tau = 0.3
    t = M.threshold(w.abs(), 2)  # 0.24
    m = M.soft_mask(w, 0.5, tau)
    (m * w).sum().backward()
    with torch.no_grad():
        # d(m w)/dw = m + w * dm/dw,  dm/dw = 2 w m (1 - m) / (tau t^2)  (relative mode)
        analytic = m + w * 2 * w * m * (1 - m) / (tau * t * t)
    assert torch.allclose(w.grad, analytic, atol=1e-6)
    # and it is not the detached-mask gradient (which would be just m)
    assert not torch.allclose(w.grad, m.detach(), atol=1e-3)


@pytest.mark.parametrize("beta", [None, 3.0])
@pytest.mark.parametrize("mode", ["relative", "absolute"])
def test_fused_autograd_equals_plain_autograd(beta, mode):
    torch.manual_seed(0)
    w1 = (torch.randn(64, 32) * 0.05).requires_grad_()
    w2 = w1.detach().clone().requires_grad_()
    t = M.threshold(w1.abs(), M.num_pruned(w1.numel(), 0.6))
    tau = 0.05 if mode == "relative" else 1e-4
    g = torch.randn(64, 32)
    ref = w1 * M.soft_mask(w1, 0.6, tau, beta=beta, tau_mode=mode, t=t)
    (ref * g).sum().backward()
    out = soft_masked_weight(w2, t, tau, mode, beta)
    (out * g).sum().backward()
    assert torch.allclose(out, ref, atol=1e-6)
    assert torch.allclose(w2.grad, w1.grad, rtol=1e-4, atol=1e-6)


def test_improved_masking_blend_values_and_gradient():
    x = torch.tensor([-0.1, 0.0, 0.05], requires_grad=True)
    tau, beta = 0.1, 2.0
    m = M.mask_from_gap(x, tau, beta)
    z = x.detach() / tau
    expected = 0.7 * torch.sigmoid(z) + 0.3 * 0.5 * (torch.tanh(beta * z) + 1)
    assert torch.allclose(m, expected, atol=1e-7)
    assert m[1].item() == pytest.approx(0.5)
    m.sum().backward()
    s = torch.sigmoid(z)
    dm = (0.7 * s * (1 - s) + 0.15 * beta * (1 - torch.tanh(beta * z) ** 2)) / tau
    assert torch.allclose(x.grad, dm, atol=1e-5)


def test_hard_mask_exact_count_with_ties():
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 2.0])
    keep = M.hard_mask(w, 0.5)  # k = 3 among four tied zeros: the first three by index
    assert keep.tolist() == [False, False, False, True, True, True]
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert (w * M.hard_mask(w, 0.5)).tolist() == [0.0, 0.0, 3.0, 4.0]


def _stable_sort_keep(scores, k):
    """The definition hard_mask_from_scores implements: prune the first k of a stable sort."""
    flat = scores.reshape(-1)
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    keep[torch.sort(flat, stable=True).indices[:k]] = False
    return keep.view_as(scores)


@pytest.mark.parametrize("seed", range(6))
def test_hard_mask_from_scores_equals_stable_sort_with_heavy_ties(seed):
    g = torch.Generator().manual_seed(seed)
    # few distinct values, so the k-th smallest is almost always tied across the cut
    scores = torch.randint(0, 7, (37, 29), generator=g).float() / 4
    if seed % 2:
        scores.view(-1)[torch.randint(0, scores.numel(), (5,), generator=g)] = float("nan")
    n = scores.numel()
    for k in (0, 1, 2, n // 3, n // 2, n - 6, n - 1, n):
        got = M.hard_mask_from_scores(scores, k)
        assert torch.equal(got, _stable_sort_keep(scores, k)), k
        assert int((~got).sum()) == k


def test_nm_two_of_four_groups():
    w = torch.tensor([[1.0, -4.0, 3.0, 2.0, 0.5, 0.1, -0.2, 0.3]])
    keep = M.nm_hard_mask(w, 2, 4)
    assert keep.tolist() == [[False, True, True, False, True, False, False, True]]
    t = M.nm_threshold(w, 2, 4)
    assert t.squeeze(1).tolist() == pytest.approx([2.5, 0.25])
    m = M.nm_soft_mask(w, t, 4, tau=0.02)
    assert ((m > 0.5) == keep).all()


def test_nm_rejects_indivisible_input_dim():
    with pytest.raises(ValueError, match="divisible"):
        M.nm_hard_mask(torch.randn(2, 6), 2, 4)


def test_fake_quant_grid_zeros_and_ste():
    w = torch.tensor([[0.0, 0.6, -1.0, 0.26], [0.1, 0.0, 0.2, -0.05]], requires_grad=True)
    q = M.fake_quant(w, bits=2, out_dim=0)  # qmax = 1: each row in {-s, 0, s}, s = max|row|
    assert q.flatten().tolist() == pytest.approx([0.0, 1.0, -1.0, 0.0, 0.0, 0.0, 0.2, 0.0])
    qc = M.fake_quant(w.t(), bits=2, out_dim=1)  # the same channels when stored (in, out)
    assert torch.equal(qc.t(), q)
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))  # straight-through
    q8 = M.fake_quant(torch.tensor([[0.0, 0.3, -1.27]]), bits=8, out_dim=0)
    assert q8.flatten().tolist() == pytest.approx([0.0, 0.3, -1.27], abs=1e-6)
