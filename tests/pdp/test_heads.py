"""The 'heads' pattern: whole attention heads across the weights they span, and their physical shrink
(Llama, grouped-query attention included); GPT-2 and OPT heads are zeroed and said to stay."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_gpt2, tiny_llama, tiny_opt
from transformers import AutoModelForCausalLM

import pdp_gpt2
from pdp_gpt2.errors import UsageError
from pdp_gpt2.export.shrink import shrink
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.patterns.slot import Slot
from pdp_gpt2.pdp.patterns.structures import head_structures, mlp_structures, removed_units, unit_parameters


def test_a_slot_reads_units_laid_out_in_blocks_and_repeats():
    # axis 1 of length 12 = (outer 2, units 3, inner 2): unit j holds columns 2j, 2j+1, 6+2j, 7+2j
    x = torch.arange(24.0).view(2, 12)
    slot = Slot(1, outer=2, inner=2)
    by_hand = [sum(x[:, c].sum() for c in (2 * j, 2 * j + 1, 6 + 2 * j, 7 + 2 * j)) for j in range(3)]
    assert slot.units(x) == 3 and slot.per_unit(x) == 8
    assert torch.equal(slot.sum(x), torch.stack(by_hand))
    assert slot.indices(torch.tensor([0, 2]), 3).tolist() == [0, 1, 4, 5, 6, 7, 10, 11]
    spread = slot.spread(torch.tensor([1.0, 0.0, 2.0]), x.shape)
    assert spread.flatten().tolist() == [1, 1, 0, 0, 2, 2] * 2
    marked = torch.zeros(2, 12, dtype=torch.bool).index_fill(1, torch.tensor([7]), True)  # column 7: outer 1, unit 0
    assert slot.any(marked).tolist() == [True, False, False]


def _gone_llama(model):
    return [removed_units(s).nonzero().flatten().tolist() for s in head_structures(model)]


def test_gpt2_heads_span_the_query_key_value_thirds_of_c_attn_and_rows_of_c_proj():
    model = tiny_gpt2()  # n_embd 64, 2 heads of 32
    (s0, _) = head_structures(model)
    c_attn, c_proj = s0.members
    assert (s0.width, c_attn.outer, c_attn.inner, c_attn.bias, c_proj.inner, c_proj.bias) == (2, 3, 32, True, 32, False)
    assert unit_parameters(s0) == 3 * 32 * 64 + 3 * 32 + 32 * 64
    pdp_gpt2.attach(model, PDPConfig(pattern="heads", sparsity=0.5)).finalize()
    for s in head_structures(model):
        (gone,) = removed_units(s).nonzero().flatten().tolist()
        cols = [third * 64 + gone * 32 + i for third in range(3) for i in range(32)]
        w, b = s.members[0].weight, s.members[0].module.bias
        assert bool((w[:, cols] == 0).all()) and bool((b[cols] == 0).all())
        kept = [c for c in range(192) if c not in cols]
        assert not bool((w[:, kept] == 0).any())
        rows = s.members[1].weight
        assert bool((rows[gone * 32:(gone + 1) * 32] == 0).all()) and not bool((rows[(1 - gone) * 32:][:32] == 0).any())
    assert all(not bool((m.weight == 0).any()) for s in mlp_structures(model) for m in s.members)  # MLPs untouched


@pytest.mark.parametrize("method", ["pdp", "magnitude", "gmp", "movement"])
def test_llama_gqa_loses_whole_key_value_groups_and_shrinks_to_the_same_logits(method, tmp_path):
    model = tiny_llama(kv_heads=2)  # 4 query heads of 16, 2 key/value heads: a unit is one kv head + 2 query heads
    (s0, _) = head_structures(model)
    assert s0.width == 2 and [m.inner for m in s0.members] == [32, 16, 16, 32]
    driver = pdp_gpt2.attach(model, method, PDPConfig(pattern="heads", sparsity=0.5))
    x = torch.randint(0, 128, (2, 8))
    for s in (0.25, 0.5):
        driver.set_sparsity(s)
        model(x).logits.sum().backward()
        driver.step()
    driver.finalize()
    for s, gone in zip(head_structures(model), _gone_llama(model)):
        assert len(gone) == 1
        q, k, v, o = (m.weight for m in s.members)
        g = gone[0]
        assert bool((q[g * 32:(g + 1) * 32] == 0).all()) and bool((o[:, g * 32:(g + 1) * 32] == 0).all())
        assert bool((k[g * 16:(g + 1) * 16] == 0).all()) and bool((v[g * 16:(g + 1) * 16] == 0).all())
        assert int((q == 0).sum()) == 32 * 64  # nothing else zeroed
    small, record = shrink(model)
    assert record["resized"] == [{"kind": "attention heads", "family": "Llama", "field": "num_key_value_heads",
                                  "before": 2, "after": 1, "layers": 2, "removed_per_layer": 1}]
    c = small.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (2, 1, 16)
    before = sum(p.numel() for p in model.parameters())
    assert record["parameters_before"] - record["parameters_after"] == 2 * (32 * 64 * 2 + 16 * 64 * 2)
    assert sum(p.numel() for p in small.parameters()) == record["parameters_after"] < before
    ids = torch.randint(0, 128, (2, 12))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, small(ids).logits, atol=1e-5)
    small.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()  # plain transformers reads the config
    with torch.no_grad():
        assert torch.allclose(again(ids).logits, small(ids).logits, atol=1e-6)


def test_llama_heads_and_neurons_pruned_in_turn_shrink_together():
    model = tiny_llama()
    pdp_gpt2.attach(model, PDPConfig(pattern="heads", sparsity=0.25)).finalize()
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5)).finalize()
    small, record = shrink(model)
    assert [(p["kind"], p["before"], p["after"]) for p in record["resized"]] == [
        ("MLP neurons", 128, 64), ("attention heads", 4, 3)]
    assert (small.config.intermediate_size, small.config.num_attention_heads, small.config.num_key_value_heads) == (
        64, 3, 3)
    ids = torch.randint(0, 128, (1, 10))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, small(ids).logits, atol=1e-5)


@pytest.mark.parametrize("maker, family", [(tiny_gpt2, "GPT-2"), (tiny_opt, "OPT")])
def test_gpt2_and_opt_heads_are_zeroed_but_the_shrink_says_they_stay(maker, family):
    model = maker()
    pdp_gpt2.attach(model, PDPConfig(pattern="heads", sparsity=0.5)).finalize()
    assert all(int(removed_units(s).sum()) == s.width // 2 for s in head_structures(model))
    with pytest.raises(UsageError, match=rf"^attention heads stay as zeros: {family} derives head_dim from the "
                                         r"hidden size.*\(export without --shrink keeps them\)$"):
        shrink(model)
    pdp_gpt2.attach(model, PDPConfig(pattern="neurons", sparsity=0.5)).finalize()
    small, record = shrink(model)  # the neurons go, the heads stay as zeros and the record says so
    assert [p["kind"] for p in record["resized"]] == ["MLP neurons"]
    assert record["kept_as_zeros"] == [f"attention heads stay as zeros: {family} derives head_dim from the hidden "
                                       "size, so its config cannot hold fewer heads"]


def test_gpt2_head_scores_count_query_key_value_and_output_weights_alike():
    model = tiny_gpt2()
    s = head_structures(model)[0]
    c_attn, c_proj = s.members
    w, b, p = c_attn.weight.detach(), c_attn.module.bias.detach(), c_proj.weight.detach()
    pattern = pdp_gpt2.pdp.patterns.get_pattern("heads")
    sq = pattern.unit_sq([[(w, c_attn.slot), (b, c_attn.bias_slot)], [(p, c_proj.slot)]])
    for h in range(2):
        cols = [t * 64 + h * 32 + i for t in range(3) for i in range(32)]
        fused = (w[:, cols].pow(2).sum() + b[cols].pow(2).sum()) / (len(cols) * 65)
        out = p[h * 32:(h + 1) * 32].pow(2).mean()
        assert sq[h] == pytest.approx(float(fused + out), rel=1e-5)
