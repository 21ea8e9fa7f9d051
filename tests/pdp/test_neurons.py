"""The 'neurons' pattern: whole MLP neurons across the weights they span (pdp/patterns/coupled.py)."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_gpt2, tiny_llama

import pdp_gpt2
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.patterns import CoupledPattern, get_pattern
from pdp_gpt2.pdp.patterns.slot import Slot
from pdp_gpt2.pdp.patterns.structures import mlp_structures, removed_units, unit_parameters


def test_unit_scores_sum_each_members_mean_square_with_the_bias_pooled_into_its_weight():
    a = torch.tensor([[1.0, 2.0], [3.0, 0.0]])  # units along axis 1: columns (1, 3) and (2, 0)
    bias = torch.tensor([1.0, 2.0])  # pools with a's column: 3 entries per unit
    b = torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 4.0]])  # units along axis 0: rows
    sq = CoupledPattern.unit_sq([[(a, Slot(1)), (bias, Slot(0))], [(b, Slot(0))]])
    assert torch.allclose(sq, torch.tensor([(1 + 9 + 1) / 3 + 8 / 3, (4 + 0 + 4) / 3 + 16 / 3]))


def test_gpt2_neurons_are_pruned_whole_in_every_member_and_lowest_scores_go():
    model = tiny_gpt2()
    structures = mlp_structures(model)
    pattern = get_pattern("neurons")
    scores = [pattern.unit_sq([[(s.members[0].weight.detach(), Slot(1)), (s.members[0].module.bias.detach(), Slot(0))],
                               [(s.members[1].weight.detach(), Slot(0))]]) for s in structures]
    pruner = pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5))
    assert [t.name for t in pruner.targets] == [m.name for s in structures for m in s.members]  # MLPs only
    pruner.finalize()
    for s, sq in zip(structures, scores):
        gone = removed_units(s)
        assert int(gone.sum()) == s.width // 2
        assert torch.equal(gone, sq <= sq.median())  # the lowest half by score (no ties in random weights)
        c_fc, c_proj = s.members
        assert bool((c_fc.weight[:, gone] == 0).all()) and bool((c_fc.module.bias[gone] == 0).all())
        assert not bool((c_fc.weight[:, ~gone] == 0).any())
        assert bool((c_proj.weight[gone] == 0).all()) and not bool((c_proj.weight[~gone] == 0).any())


def test_the_soft_mask_is_the_units_mask_on_every_member_and_its_gradient_reaches_the_peer():
    model = tiny_gpt2()
    pruner = pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5, tau=0.5))
    mlp = model.transformer.h[0].mlp
    c_fc, c_proj = mlp.c_fc, mlp.c_proj
    w_fc, w_proj = pruner.original(pruner.targets[0]), pruner.original(pruner.targets[1])
    sq = (torch.cat([w_fc, mlp.c_fc.bias[None]], 0) ** 2).mean(0) + (w_proj ** 2).mean(1)
    t = c_fc.parametrizations.weight[0].t
    m = torch.sigmoid((sq / t ** 2 - 1) / 0.5)
    assert torch.allclose(c_fc.weight, w_fc * m[None, :]) and torch.allclose(c_proj.weight, w_proj * m[:, None])
    assert torch.equal(c_proj.parametrizations.weight[0].t, t)
    c_fc.weight.sum().backward()  # c_fc's masked weight depends on c_proj through the unit scores
    assert w_proj.grad is not None and float(w_proj.grad.abs().sum()) > 0


@pytest.mark.parametrize("method", ["magnitude", "gmp", "movement"])
def test_hard_methods_prune_whole_neurons_of_llama(method):
    model = tiny_llama()
    x = torch.randint(0, 128, (2, 8))
    driver = pdp_gpt2.attach(model, method, PDPConfig(pattern="neurons", sparsity=0.5))
    for s in (0.25, 0.5):
        driver.set_sparsity(s)
        model(x).logits.sum().backward()
        driver.step()
    driver.finalize()
    for st in mlp_structures(model):
        gone = removed_units(st)
        assert int(gone.sum()) == st.width // 2
        for m in st.members:
            dead = (m.weight == 0).all(dim=1 - m.axis)
            assert torch.equal(dead, gone), m.name


def test_gmp_keeps_pruned_neurons_pruned_as_the_count_grows():
    model = tiny_gpt2()
    driver = pdp_gpt2.attach(model, "gmp", PDPConfig(pattern="neurons", sparsity=0.5))
    driver.set_sparsity(0.25)
    first = ~driver.mask_of(driver.targets[1]).keep.any(dim=1)
    with torch.no_grad():  # the pruned neurons' weights would now outscore every kept one
        driver.original(driver.targets[1])[first] = 10.0
    driver.set_sparsity(0.5)
    now = ~driver.mask_of(driver.targets[1]).keep.any(dim=1)
    assert bool(now[first].all()) and int(now.sum()) == int(0.5 * now.numel())


def test_remove_restores_the_dense_model():
    model = tiny_gpt2()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5)).remove()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def test_the_summary_counts_what_a_shrink_removes():
    model = tiny_gpt2()
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.25)).finalize()
    s = mlp_structures(model)[0]
    assert unit_parameters(s) == 64 + 1 + 64  # c_fc column + its bias + c_proj row
    assert int(removed_units(s).sum()) == 64


@pytest.mark.parametrize("config, message", [
    (dict(allocation="global"), "use allocation 'layer'"),
    (dict(targets=["*.mlp.c_fc"]), "targets must name transformer.h.0.mlp.c_proj too"),
    (dict(targets=["*.mlp.*", "*.attn.c_attn"]), "transformer.h.0.attn.c_attn is not part of any"),
])
def test_refused_in_one_line(config, message):
    with pytest.raises(UsageError, match=message):
        pdp_gpt2.attach(tiny_gpt2(), PDPConfig(pattern="neurons", sparsity=0.5, **config))


def test_a_model_without_known_mlps_is_refused():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 4))
    with pytest.raises(UsageError, match="no structure of a known architecture family"):
        pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5, targets=["0", "1"]))


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_calibrated_methods_refuse_coupled_patterns(method):
    from pdp_gpt2.train.config import TrainConfig

    with pytest.raises(UsageError, match="patterns, not 'neurons'"):
        TrainConfig(method=method, pdp=PDPConfig(pattern="neurons", sparsity=0.5))


def test_under_fsdp2_the_first_forward_is_refused_in_one_line(monkeypatch):
    from pdp_gpt2.pdp.kernels import sharded

    model = tiny_gpt2()
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5))
    monkeypatch.setattr(sharded, "is_sharded", lambda w: True)  # what shard_model makes of every weight
    with pytest.raises(UsageError, match="does not run under FSDP2"):
        model(torch.randint(0, 128, (1, 4)))


def test_quantized_neurons_finalize_to_the_grid_with_whole_neurons_zero():
    model = tiny_gpt2()
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5, quantize=True, bits=4)).finalize()
    for s in mlp_structures(model):
        gone = removed_units(s)
        assert int(gone.sum()) == s.width // 2
        w = s.members[0].weight  # Conv1D (in, out): 4-bit per output channel, at most 2^4 - 1 levels each
        assert max(len(torch.unique(w[:, j])) for j in range(w.shape[1])) <= 15
        assert bool((w[:, gone] == 0).all())
