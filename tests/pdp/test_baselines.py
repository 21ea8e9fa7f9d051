"""Baseline mask drivers: hand-worked masks, gradients, the gmp schedule, Wanda against the published
algorithm re-derived here, and the CLI contract."""
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from pdp_gpt2.cli import main
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.core.attach import attach
from pdp_gpt2.pdp.core.hard import HardMask
from pdp_gpt2.pdp.patterns import Part, get_pattern
from pdp_gpt2.errors import UsageError
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.core.targets import find_targets
from pdp_gpt2.pdp.kernels.mask import in_last
from pdp_gpt2.pdp.methods.wanda.driver import per_output_keep

from helpers import tiny_gpt2


# ---- hand-computed masks ------------------------------------------------------------------

def keep_from_scores(scores, sparsity, *, pattern, out_dim):
    """The keep-mask a hard method selects: the pattern's k lowest-scoring units pruned."""
    return pattern.keep(scores, out_dim, pattern.num_pruned(scores.shape, out_dim, sparsity))


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
    pruner = attach(gpt2, "magnitude", sparsity=0.6)
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
    pruner = attach(gpt2, "gmp", sparsity=0.8)
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
    pruner = attach(gpt2, "gmp", sparsity=0.5)
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
    pruner = attach(gpt2, "gmp", sparsity=0.75)
    pruner.set_sparsity(0.75)
    names = [t.name for t in pruner.targets]
    pruner.finalize()
    assert set(gpt2.state_dict()) == fresh_keys
    for name in names:
        w = gpt2.get_submodule(name).weight
        assert int((w == 0).sum()) == int(0.75 * w.numel()), name


def test_keep_masks_travel_in_the_model_state_dict(gpt2):
    pruner = attach(gpt2, "magnitude", sparsity=0.5)
    sd = gpt2.state_dict()
    key = f"{pruner.targets[0].name}.parametrizations.weight.0.keep"
    assert key in sd and sd[key].dtype == torch.bool and float((~sd[key]).float().mean()) == 0.5


# ---- Wanda: the published algorithm, re-derived here, against ours --------------------------------

def _published_wanda(w_out_in: torch.Tensor, x: torch.Tensor, r: float, nm: tuple[int, int] | None = None):
    """Wanda as the paper states it (Sun et al., Algorithm 1): S_ij = |W_ij| * ||X_j||_2 over the calibration
    tokens; each output row i prunes its int(r * cols) lowest S_ij (the reference's stable sort), or
    with N:M the N lowest of every M consecutive inputs of the row.  Returns the set pruned, (out, in)."""
    score = w_out_in.abs() * x.reshape(-1, x.shape[-1]).norm(dim=0)
    rows, cols = score.shape
    pruned = torch.zeros(rows, cols, dtype=torch.bool)
    for i in range(rows):
        if nm is None:
            pruned[i, torch.argsort(score[i], stable=True)[:int(cols * r)]] = True
        else:
            n, m = nm
            for g in range(0, cols, m):
                pruned[i, g + torch.argsort(score[i, g:g + m], stable=True)[:n]] = True
    return pruned


class _OneLayer(torch.nn.Module):
    """One target layer in a numbered block, fed rows of a fixed input matrix X (input_ids pick the rows)."""

    def __init__(self, x: torch.Tensor, layer: torch.nn.Module):
        super().__init__()
        self.register_buffer("x", x)
        self.h = torch.nn.ModuleList([layer])

    def forward(self, input_ids, use_cache=None):
        return self.h[0](self.x[input_ids])


def _wanda_layer(conv1d: bool, d_in: int = 192, d_out: int = 24, tokens: int = 256, seed: int = 0):
    from transformers.pytorch_utils import Conv1D

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(tokens, d_in, generator=g) @ torch.randn(d_in, d_in, generator=g) / d_in ** 0.5  # correlated
    x = x * torch.rand(d_in, generator=g) * 3  # and of different norms
    layer = Conv1D(d_out, d_in) if conv1d else torch.nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(layer.weight.shape, generator=g))
    return _OneLayer(x, layer), x, torch.arange(tokens).view(-1, 16)


def _wanda_pruned(model, calib, **kw) -> torch.Tensor:
    """Our Wanda's pruned set, as (out, in)."""
    pruner = attach(model, "wanda", calibration=calib, **kw)
    t = pruner.targets[0]
    return in_last(~pruner.mask_of(t).keep, t.out_dim)


@pytest.mark.parametrize("conv1d", [False, True])  # Linear (out, in), Conv1D (in, out)
@pytest.mark.parametrize("r", [0.5, 0.9, 0.98])
def test_wanda_prunes_what_the_published_per_row_wanda_prunes_and_at_most_one_more(conv1d, r):
    model, x, calib = _wanda_layer(conv1d)
    w = in_last(model.h[0].weight.detach().clone(), 1 if conv1d else 0)
    ref = _published_wanda(w, x, r)
    ours = _wanda_pruned(model, calib, sparsity=r)
    rows, cols = ours.shape
    assert int(ours.sum()) == int(r * rows * cols)  # the tensor's exact floor(r n), like every method
    assert not (ref & ~ours).any()  # everything the paper prunes, ours prunes too
    extra = (ours & ~ref).sum(1)
    assert int(extra.max()) <= 1 and int(extra.sum()) == int(r * rows * cols) - rows * int(r * cols)
    # the rows that prune one more are those whose next-lowest score is lowest across the tensor
    score = w.abs() * x.norm(dim=0)
    nxt = torch.where(ref, torch.inf, score).min(1).values
    more = extra.bool()
    if more.any() and not more.all():
        assert float(nxt[more].max()) <= float(nxt[~more].min())


@pytest.mark.parametrize("conv1d", [False, True])
def test_wanda_two_of_four_masks_equal_the_published(conv1d):
    model, x, calib = _wanda_layer(conv1d)
    w = in_last(model.h[0].weight.detach().clone(), 1 if conv1d else 0)
    assert torch.equal(_wanda_pruned(model, calib, pattern="2:4", sparsity=0.5),
                       _published_wanda(w, x, 0.5, nm=(2, 4)))


def test_per_output_keep_by_hand():
    s = torch.tensor([[1.0, 5.0, 2.0, 9.0],
                      [4.0, 3.0, 8.0, 0.5],
                      [7.0, 6.0, 0.1, 0.2]])
    # k = 7 of 12 on 3 rows: each row prunes 2, and 7 mod 3 = 1 row one more: the row whose third-lowest
    # score is lowest (row 0: 5, row 1: 4, row 2: 6): row 1
    keep = per_output_keep(s, 7)
    assert (~keep).tolist() == [[True, False, True, False], [True, True, False, True], [False, False, True, True]]
    assert per_output_keep(s, 0).all() and not per_output_keep(s, 12).any()


def test_wanda_tensor_groups_rank_the_whole_tensor():
    model, x, calib = _wanda_layer(False)
    w = model.h[0].weight.detach().clone()
    ours = _wanda_pruned(model, calib, sparsity=0.5, wanda_groups="tensor")
    score = w.abs() * x.norm(dim=0)
    assert torch.equal(ours, ~keep_from_scores(score, 0.5, pattern=get_pattern("unstructured"), out_dim=0))
    assert not torch.equal(ours, _published_wanda(w, x, 0.5))  # the groups matter on this layer
    with pytest.raises(UsageError, match="wanda_groups must be 'output' or 'tensor'"):
        PDPConfig(wanda_groups="row")


def test_wanda_calibrates_block_by_block_on_the_pruned_outputs(gpt2):
    """Block 1's scores come from inputs that went through block 0 as pruned (the reference's order): its
    masks equal the published per-row Wanda on the inputs of a full forward after block 0 was pruned."""
    ids = torch.randint(0, 128, (6, 16), generator=torch.Generator().manual_seed(0))
    dense = {t.name: t.module.weight.detach().clone() for t in find_targets(gpt2)}
    pruner = attach(gpt2, "wanda", calibration=ids, sparsity=0.5)
    targets = list(pruner.targets)
    keeps = {t.name: pruner.mask_of(t).keep.clone() for t in targets}
    pruner.remove()  # the dense weights come back untouched
    assert all(torch.equal(t.module.weight, dense[t.name]) for t in targets)
    with torch.no_grad():
        for t in targets:
            if t.name.startswith("transformer.h.0."):
                t.module.weight.mul_(keeps[t.name])  # block 0 as pruned
    seen = {}
    hooks = [t.module.register_forward_hook(lambda m, i, o, n=t.name: seen.setdefault(n, []).append(i[0]))
             for t in targets]
    with torch.no_grad():
        gpt2(input_ids=ids)
    for h in hooks:
        h.remove()
    differs = False
    for t in targets:
        if t.name.startswith("transformer.h.1."):
            w = in_last(dense[t.name], t.out_dim)
            ref = _published_wanda(w, torch.cat(seen[t.name]), 0.5)  # 0.5 * cols is whole: no extra rows
            assert torch.equal(in_last(~keeps[t.name], t.out_dim), ref), t.name
            dense_x = _inputs_dense(dense, ids, t.name)
            differs |= not torch.equal(ref, _published_wanda(w, dense_x, 0.5))
    assert differs  # and calibrating on the dense model would have chosen other masks


def _inputs_dense(weights: dict, ids: torch.Tensor, name: str) -> torch.Tensor:
    from helpers import tiny_gpt2

    model = tiny_gpt2()
    model.load_state_dict({**model.state_dict(), **{f"{k}.weight": v for k, v in weights.items()}})
    seen = []
    h = model.get_submodule(name).register_forward_hook(lambda m, i, o: seen.append(i[0]))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    return torch.cat(seen)


def test_wanda_help_and_record_say_how_the_count_is_defined():
    from pdp_gpt2.pdp.core.attach import method_record
    from pdp_gpt2.train import flags

    help_of = {f.name: flags.help_of(f) for f in flags.fields()}
    assert "wanda_groups" in help_of and "floor(r cols)" in help_of["wanda_groups"]
    assert "--wanda_groups" in help_of["method"]
    rec = method_record("wanda", PDPConfig())
    assert rec["comparison_group"] == "output" and "floor(k / rows)" in rec["count"]
    assert "sequential" in rec["calibration"]
    assert method_record("wanda", PDPConfig(wanda_groups="tensor"))["count"].endswith("of the whole tensor")
    assert method_record("magnitude", PDPConfig()) == {}


def test_wanda_groups_is_ignored_by_another_method_with_one_warning():
    # a sweep may set it for every trial (as it sets tau for gmp): left out of the other method's run and record
    from pdp_gpt2.train import flags
    from pdp_gpt2.train.config import TrainConfig

    assert TrainConfig(method="wanda", pdp=PDPConfig(wanda_groups="tensor")).pdp.wanda_groups == "tensor"
    gmp = TrainConfig(method="gmp", pdp=PDPConfig(wanda_groups="tensor"))
    assert "wanda_groups" in flags.ignored(gmp) and "wanda_groups" not in flags.recorded(gmp)["pdp"]
    assert "--wanda_groups" in flags.ignored_warning(gmp) and "wanda_groups" not in flags.ignored(
        TrainConfig(method="wanda"))


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
    manifest = json.loads((out / "final" / "pdp_pruning.json").read_text())
    assert ("count" in manifest["method_record"]) == (method in ("wanda", "sparsegpt"))
    own = {"wanda": {"wanda_groups": "output"}, "sparsegpt": {"sparsegpt_blocksize": 128, "sparsegpt_percdamp": 0.01}}
    assert manifest["method_settings"] == own.get(method, {})  # its own config, nobody else's
    assert set(s["config"]["pdp"]) & {"tau", "wanda_groups", "sparsegpt_blocksize"} == set(own.get(method, {}))
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
    part = Part(torch.tensor([[-1.0, -2.0, 3.0, 4.0]]), 0)
    w = hm.final_local(part, hm.final_keep(part))  # what finalize writes
    assert w.tolist() == [[0.0, -2.0, 0.0, 4.0]]
    assert not torch.signbit(w[0, 0])  # +0.0, not -0.0: saved bytes do not depend on pruned signs
