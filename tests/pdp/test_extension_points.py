"""The two extension points: a pattern is one Pattern subclass + one PATTERNS line, a
method is one MaskDriver subclass + one registered MethodSpec.  Toys of each, registered here, run end to
end on a tiny GPT-2: attach, train steps, finalize, the CLI and its run directory."""
import json

import pytest
import torch

import pdp_gpt2
from pdp_gpt2 import PDPConfig, UsageError
from pdp_gpt2.pdp.kernels import mask as M
from pdp_gpt2.pdp.core import registry
from pdp_gpt2.pdp.core.attach import attach
from pdp_gpt2.pdp.core.hard import HardMask
from pdp_gpt2.pdp.core.driver import MaskDriver
from pdp_gpt2.pdp.patterns import PATTERNS, Pattern, get_pattern
from pdp_gpt2.train.config import TrainConfig

from helpers import ROOT, tiny_gpt2


# ---- the toys: exactly what docs/architecture.md shows ------------------------------------------

class Columns(Pattern):
    """Whole input features, ranked by their L2 norm (Row's transpose)."""

    name = "columns"

    def num_pruned(self, shape, out_dim, sparsity):
        return M.num_pruned(int(shape[1 - out_dim]), sparsity)

    def scores(self, w, out_dim):  # the L2 norm of each input feature, broadcastable to w
        return (w * w).sum(dim=out_dim, keepdim=True).sqrt()

    def soft_mask(self, w, out_dim, t, tau, tau_mode, beta):
        return M.mask_from_gap(M.normalized_gap((w * w).sum(dim=out_dim, keepdim=True), t, tau_mode), tau, beta)

    def expand(self, keep_units, shape, out_dim):  # a kept input feature keeps all its weights
        return keep_units.expand(shape)


class RandomMask(MaskDriver):
    """One-shot hard mask on random scores (seeded per tensor): the floor of any pruning method."""

    one_shot = True
    keeps_history = True  # the mask is not a function of the weights: it travels in the state_dict

    def make_mask(self, t):
        return HardMask(t.module.weight.shape, t.out_dim)  # called before any mask is on

    def update(self, t, sparsity):
        scores = torch.rand(self.original(t).shape, generator=torch.Generator().manual_seed(len(t.name)))
        k = self.pattern.num_pruned(scores.shape, t.out_dim, sparsity)
        self.mask_of(t).keep.copy_(self.pattern.keep(scores, t.out_dim, k))


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(PATTERNS, "columns", Columns)  # the one registry line of the pattern
    registry.register(registry.MethodSpec("random", RandomMask))  # the one registry line of the method
    yield
    registry.unregister("random")


def _ids(n=2, length=16):
    return torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(1))


def _dead_inputs(w, out_dim):
    """How many input features of a weight are entirely zero."""
    return int((w == 0).all(dim=out_dim).sum())


# ---- without registration, neither name exists ------------------------------------------------------

def test_unregistered_names_are_refused():
    with pytest.raises(UsageError, match="unknown pattern 'columns'"):
        PDPConfig(pattern="columns")
    with pytest.raises(UsageError, match="unknown method 'random'"):
        attach(tiny_gpt2(), "random", PDPConfig())
    with pytest.raises(UsageError, match="method must be one of"):
        TrainConfig(method="random")


# ---- the toy pattern under every built-in driver ------------------------------------------------

@pytest.mark.parametrize("method", ["pdp", "gmp", "magnitude"])
def test_toy_pattern_end_to_end(registered, method):
    model = tiny_gpt2()
    cfg = PDPConfig(sparsity=0.25, pattern="columns")
    assert isinstance(cfg.mask_pattern, Columns)
    pruner = attach(model, method, cfg)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    model.train()
    for step in range(3):
        pruner.set_sparsity(0.25 * (step + 1) / 3)
        model(_ids(), labels=_ids()).loss.backward()
        opt.step()
        opt.zero_grad()
        pruner.step()
    pruner.set_sparsity(0.25)
    stats = pruner.stats()
    pruner.finalize()
    for t_name, layer in stats["layers"].items():
        w = model.get_submodule(t_name).weight  # Conv1D (in, out): input features are rows
        n_in = w.shape[0]
        assert _dead_inputs(w, 1) == int(0.25 * n_in), t_name  # exactly floor(r * inputs) whole inputs
        assert int((w == 0).sum()) == int(0.25 * n_in) * w.shape[1], t_name  # and nothing else
        assert layer["hard"] == pytest.approx(int(0.25 * n_in) / n_in)


def test_toy_pattern_soft_mask_is_differentiable_and_prunes_smallest_inputs(registered):
    model = tiny_gpt2()
    c = model.transformer.h[0].mlp.c_fc  # Conv1D: weight (in=64, out=256)
    with torch.no_grad():
        c.weight[:8] *= 0.01  # eight input features with a tiny norm
    pruner = pdp_gpt2.attach(model, PDPConfig(sparsity=8 / 64, pattern="columns",
                                              targets=["transformer.h.0.mlp.c_fc"]))
    m = pruner.masks()["transformer.h.0.mlp.c_fc"]
    assert (m[:8] < 0.01).all() and (m[8:] > 0.99).all()
    model(_ids(), labels=_ids()).loss.backward()
    assert pruner.original(pruner.targets[0]).grad.abs().sum() > 0
    pruner.finalize()
    assert (c.weight[:8] == 0).all() and (c.weight[8:] != 0).any(dim=1).all()


def test_toy_pattern_keeps_the_default_sparsity_of_the_base():
    assert Columns().default_sparsity == 0.9
    assert get_pattern("2:4").default_sparsity == 0.5 and get_pattern("1:8").default_sparsity == 0.875


# ---- the toy method -----------------------------------------------------------------------------------

def test_toy_method_end_to_end(registered):
    model = tiny_gpt2()
    fresh_keys = set(tiny_gpt2().state_dict())
    pruner = pdp_gpt2.attach(model, "random", PDPConfig(sparsity=0.5))
    assert isinstance(pruner, RandomMask) and pruner.method == "random"
    before = {k: v.clone() for k, v in pruner.masks().items()}
    pruner.set_sparsity(0.1)  # one-shot: the schedule does not move it
    pruner.step()
    assert all(torch.equal(before[k], v) for k, v in pruner.masks().items())
    model.train()
    model(_ids(), labels=_ids()).loss.backward()
    for t in pruner.targets:
        g, keep = pruner.original(t).grad, pruner.mask_of(t).keep
        assert (g[~keep] == 0).all() and g[keep].abs().sum() > 0  # pruned weights get no gradient
    state = pruner.state_dict()
    assert state["method"] == "random" and state["steps"] == 1
    assert pruner.stats()["sparsity_hard"] == 0.5
    names = [t.name for t in pruner.targets]
    pruner.finalize()
    assert set(model.state_dict()) == fresh_keys
    for name in names:
        w = model.get_submodule(name).weight
        assert int((w == 0).sum()) == w.numel() // 2, name


def test_toy_method_and_pattern_through_the_cli(registered, tmp_path, tiny_assets):
    from pdp_gpt2.cli import main

    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    rc = main(["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
               "--max_steps", "4", "--warmup_steps", "2", "--batch_size", "4", "--max_length", "32",
               "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0",
               "--method", "random", "--pattern", "columns", "--sparsity", "0.25"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "random"
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(out / "final")
    for name, d in s["layers"].items():
        w = m.get_submodule(name).weight
        assert _dead_inputs(w, 1) == int(0.25 * w.shape[0]) and d["zeros"] == int((w == 0).sum()), name


def test_dense_is_no_driver():
    assert registry.get("dense").driver_class() is None and not registry.get("dense").prunes
    assert attach(tiny_gpt2(), "dense", PDPConfig()) is None


def test_the_toy_pattern_in_docs_architecture_runs():
    """docs/architecture.md's pattern, executed as written: one class + one registry line (its method
    example runs in test_worked_examples.py)."""
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n### A new pattern\n", 1)[1].split("\n### ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    saved = dict(PATTERNS)
    try:
        exec(code, {})
        assert set(PATTERNS) - set(saved) == {"columns"}
        registry.register(registry.MethodSpec("random", RandomMask))
        model = tiny_gpt2()
        pdp_gpt2.attach(model, "random", PDPConfig(sparsity=0.5, pattern="columns")).finalize()
        w = model.transformer.h[1].mlp.c_proj.weight  # Conv1D (in=256, out=64)
        assert _dead_inputs(w, 1) == 128 and int((w == 0).sum()) == 128 * 64
    finally:
        PATTERNS.clear(), PATTERNS.update(saved)
        registry.unregister("random")


# ---- each method is handed its own config ----

def test_each_method_gets_its_own_part_of_the_flat_config():
    import dataclasses
    import warnings

    from pdp_gpt2.pdp.core.config import PruningConfig
    from pdp_gpt2.pdp.methods.pdp.config import PDPMaskConfig

    flat = pdp_gpt2.PDPConfig(sparsity=0.5, tau=0.05, wanda_groups="tensor", targets=["0", "1"])
    for method, cls in (("gmp", PruningConfig), ("magnitude", PruningConfig), ("pdp", PDPMaskConfig)):
        model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
        pruner = pdp_gpt2.attach(model, method, flat)
        assert type(pruner.config) is cls, method
        assert dataclasses.asdict(pruner.config) == {k: v for k, v in dataclasses.asdict(flat).items()
                                                     if k in {f.name for f in dataclasses.fields(cls)}}
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner = pdp_gpt2.attach(model, "gmp", sparsity=0.5, tau=0.5, targets=["0", "1"])  # tau: PDP's
    assert type(pruner.config) is PruningConfig and pruner.config.sparsity == 0.5
    assert [str(w.message) for w in caught if w.category is DeprecationWarning] == ["method 'gmp' does not take tau: ignored"]
    with pytest.raises(TypeError):
        pdp_gpt2.attach(torch.nn.Sequential(torch.nn.Linear(8, 8)), "gmp", sparsity=0.5, not_a_setting=1)


def test_sparsegpt_settings_live_in_its_config():
    from pdp_gpt2.pdp.core.attach import method_record, method_settings
    from pdp_gpt2.pdp.methods.sparsegpt.config import SparseGPTConfig

    cfg = PDPConfig(sparsity=0.5, sparsegpt_blocksize=64, sparsegpt_percdamp=0.05)
    assert method_settings("sparsegpt", cfg) == {"sparsegpt_blocksize": 64, "sparsegpt_percdamp": 0.05}
    assert method_settings("gmp", cfg) == {} and method_settings("dense", cfg) == {}
    record = method_record("sparsegpt", cfg)
    assert "blocks of 64" in record["count"] and record["damping"].startswith("0.05 of")
    with pytest.raises(UsageError, match="sparsegpt_blocksize must be an integer >= 1"):
        SparseGPTConfig(sparsegpt_blocksize=0)

