"""Baseline mask drivers: hand-worked masks, gradients, the gmp schedule, and the CLI contract."""
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from pdp_gpt2.cli import main
from pdp_gpt2.pdp import mask as M
from pdp_gpt2.pdp.attach import attach_baseline
from pdp_gpt2.pdp.baselines import HardMask, keep_from_scores, wanda_scores
from pdp_gpt2.pdp.patterns import get_pattern
from pdp_gpt2.pdp.targets import find_targets

from helpers import tiny_gpt2


# ---- hand-computed masks ------------------------------------------------------------------

def test_keep_unstructured_prunes_exactly_the_smallest():
    w = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    keep = keep_from_scores(w.abs(), 0.5, pattern=get_pattern("unstructured"), out_dim=0)
    assert keep.tolist() == [[False, False], [True, True]]


def test_keep_row_prunes_whole_output_rows_for_both_layouts():
    w = torch.tensor([[3.0, 3.0], [1.0, 1.0], [2.0, 2.0]])  # Linear (out=3, in=2): row 1 is smallest
    keep = keep_from_scores(w.abs(), 0.34, pattern=get_pattern("row"), out_dim=0)
    assert keep.tolist() == [[True, True], [False, False], [True, True]]
    keep_t = keep_from_scores(w.t().abs(), 0.34, pattern=get_pattern("row"), out_dim=1)  # Conv1D (in, out)
    assert keep_t.tolist() == keep.t().tolist()


def test_keep_nm_prunes_two_of_every_four_inputs():
    w = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.5, 8.0, 7.0, 0.1]])
    keep = keep_from_scores(w.abs(), 0.5, pattern=get_pattern("2:4"), out_dim=0)
    assert keep.tolist() == [[True, False, True, False, False, True, True, False]]


def test_hard_mask_gives_pruned_weights_zero_gradient():
    hm = HardMask((2, 2), out_dim=0)
    hm.keep.copy_(torch.tensor([[True, False], [False, True]]))
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (hm(w) * torch.tensor([[10.0, 20.0], [30.0, 40.0]])).sum().backward()
    assert hm(w).tolist() == [[1.0, 0.0], [0.0, 4.0]]
    assert w.grad.tolist() == [[10.0, 0.0], [0.0, 40.0]]


# ---- drivers on a tiny GPT-2 -----------------------------------------------------------------

def test_magnitude_is_one_shot_and_ignores_the_schedule(gpt2):
    ref = {t.name: t.module.weight.detach().clone() for t in find_targets(gpt2)}
    pruner = attach_baseline(gpt2, "magnitude", sparsity=0.6)
    before = {k: v.clone() for k, v in pruner.masks().items()}
    pruner.set_sparsity(0.1)  # the callback's ramp: must not move a one-shot mask
    for name, m in pruner.masks().items():
        assert torch.equal(m, before[name])
        w = ref[name]
        k = int(0.6 * w.numel())
        assert int((m == 0).sum()) == k
        assert float(w.abs()[m == 0].max()) <= float(w.abs()[m == 1].min())  # the smallest |w| went
    assert pruner.stats()["sparsity_target"] == pytest.approx(0.6)


def test_gmp_follows_the_schedule_and_pruned_weights_stay_pruned(gpt2):
    pruner = attach_baseline(gpt2, "gmp", sparsity=0.8)
    assert pruner.stats()["sparsity_hard"] == 0.0  # gradual: starts dense
    pruner.set_sparsity(0.4)
    t = pruner.targets[0]
    pruned = pruner.mask_of(t).keep.logical_not().clone()
    with torch.no_grad():  # a pruned weight grows large (as if the optimizer had moved it)
        w = pruner.original(t)
        w[pruned] = 100.0
    pruner.set_sparsity(0.6)
    keep = pruner.mask_of(t).keep
    assert not keep[pruned].any()  # ... and still stays pruned
    assert int((~keep).sum()) == int(0.6 * keep.numel())


def test_gmp_skips_unchanged_masks_but_prunes_a_kept_zero(gpt2):
    pruner = attach_baseline(gpt2, "gmp", sparsity=0.5)
    pruner.set_sparsity(0.5)
    a, b = pruner.targets[:2]
    before = {t.name: pruner.mask_of(t).keep.clone() for t in (a, b)}
    with torch.no_grad():
        wa = pruner.original(a)
        wa.mul_(1.5)  # every kept weight still > 0: same mask
        wb = pruner.original(b)
        kept_idx = before[b.name].view(-1).nonzero()[0]
        wb.view(-1)[kept_idx] = 0.0  # a kept weight hits exactly 0: k + 1 zero scores
    pruner.step()
    assert torch.equal(pruner.mask_of(a).keep, before[a.name])
    keep_b = pruner.mask_of(b).keep
    # The full recomputation decides b: k+1 zero scores, ties broken by index as a stable sort.
    score = pruner.original(b).detach().abs() * before[b.name]
    assert torch.equal(keep_b, M.hard_mask_from_scores(score, int(0.5 * score.numel())))
    assert int((~keep_b).sum()) == int(0.5 * keep_b.numel())


def test_finalize_exact_zeros_and_plain_state_dict(gpt2):
    fresh_keys = set(tiny_gpt2().state_dict())
    pruner = attach_baseline(gpt2, "gmp", sparsity=0.75)
    pruner.set_sparsity(0.75)
    names = [t.name for t in pruner.targets]
    pruner.finalize()
    assert set(gpt2.state_dict()) == fresh_keys
    for name in names:
        w = gpt2.get_submodule(name).weight
        assert int((w == 0).sum()) == int(0.75 * w.numel()), name


def test_keep_masks_travel_in_the_model_state_dict(gpt2):
    pruner = attach_baseline(gpt2, "magnitude", sparsity=0.5)
    sd = gpt2.state_dict()
    key = f"{pruner.targets[0].name}.parametrizations.weight.0.keep"
    assert key in sd and sd[key].dtype == torch.bool and float((~sd[key]).float().mean()) == 0.5


def test_wanda_scores_weight_by_input_norm():
    model = tiny_gpt2()
    targets = find_targets(model)
    blocks = torch.randint(0, 128, (4, 16))
    scores = wanda_scores(model, targets, blocks)
    t = targets[0]  # Conv1D: weight (in, out), so the input norm scales rows
    w = t.module.weight.detach().abs()
    ratio = scores[t.name] / w
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-5)  # same factor along outputs
    assert ratio.std() > 0  # and different inputs have different norms


# ---- the CLI contract ----------------------------------------------------------------------

def _train(tmp_path, tiny_assets, method, *extra):
    model_dir, corpus = tiny_assets
    out = tmp_path / method
    argv = ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "8", "--warmup_steps", "4", "--batch_size", "4", "--max_length", "32",
            "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0", "--method", method, *extra]
    return main(argv), out


@pytest.mark.parametrize("method", ["magnitude", "gmp", pytest.param("wanda", marks=pytest.mark.slow),
                                    pytest.param("sparsegpt", marks=pytest.mark.slow)])
def test_cli_baseline_writes_contract_with_exact_zeros(tmp_path, tiny_assets, method):
    rc, out = _train(tmp_path, tiny_assets, method, "--sparsity", "0.75")
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == method and s["train_steps"] == 8
    assert s["sparsity_actual"] == pytest.approx(0.75, abs=1e-9)
    assert all(math.isfinite(s[k]) and s[k] > 1 for k in ("perplexity", "perplexity_dense", "perplexity_soft"))
    assert s["soft_hard_gap"] == pytest.approx(0.0, abs=1e-6)  # a hard mask: soft and hard are the same model
    m = AutoModelForCausalLM.from_pretrained(out / "final")
    for name, d in s["layers"].items():
        w = m.get_submodule(name).weight
        assert int((w == 0).sum()) == d["zeros"] == int(0.75 * w.numel()), name
    targets = [json.loads(x)["sparsity_target"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    if method == "gmp":
        assert targets[0] < targets[1] and targets[-1] == pytest.approx(0.75)  # cubic ramp over 4 steps
    else:
        assert targets == [pytest.approx(0.75)] * 4  # pruned at step 0, frozen
    hist = json.loads((out / "mask_hist.json").read_text())["moments"]
    assert hist[-1]["step"] == 8 and hist[-1]["below_half"] == pytest.approx(0.75)
    assert hist[-1]["band"] == 0.0  # hard masks are only 0 or 1


@pytest.mark.slow
def test_resumed_gmp_run_ends_bit_identical(tmp_path, tiny_assets):
    """The keep-masks travel in Trainer checkpoints: resuming from step 3 gives the same final model."""
    import shutil

    extra = ("--sparsity", "0.75", "--save_steps", "3", "--max_steps", "6")
    rc, full = _train(tmp_path / "a", tiny_assets, "gmp", *extra)
    assert rc == 0
    part = tmp_path / "b" / "gmp"
    part.mkdir(parents=True)
    for name in ("checkpoint-3", "run_config.json", "metrics.jsonl"):  # as if killed after step 3
        (shutil.copytree if (full / name).is_dir() else shutil.copy2)(full / name, part / name)
    rc, resumed = _train(tmp_path / "b", tiny_assets, "gmp", *extra, "--resume")
    assert rc == 0 and resumed == part
    a = AutoModelForCausalLM.from_pretrained(full / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(resumed / "final").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finalize_writes_positive_zeros():
    hm = HardMask((1, 4), out_dim=0)
    hm.keep.copy_(torch.tensor([[False, True, False, True]]))
    w = hm.final_weight(torch.tensor([[-1.0, -2.0, 3.0, 4.0]]))
    assert w.tolist() == [[0.0, -2.0, 0.0, 4.0]]
    assert not torch.signbit(w[0, 0])  # +0.0, not -0.0: saved bytes do not depend on pruned signs
