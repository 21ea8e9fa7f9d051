"""docs/architecture.md's coupled pattern runs as written: one file of its own, one registration line."""
from __future__ import annotations

import re

import pytest
import torch
from helpers import ROOT
from torch import nn

import pdp_gpt2
from pdp_gpt2.pdp.config import PDPConfig
from pdp_gpt2.pdp.patterns import PATTERNS


def snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "architecture.md").read_text(), re.S)
    return next(b for b in blocks if "class HiddenUnits" in b)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr("pdp_gpt2.pdp.patterns.PATTERNS", dict(PATTERNS))  # the registration stays in this test
    import pdp_gpt2.pdp.patterns as P

    exec(compile(snippet(), "docs/architecture.md", "exec"), {"__name__": "example"})
    assert "hidden-units" in P.PATTERNS
    yield


@pytest.mark.parametrize("method", ["pdp", "magnitude", "gmp"])  # movement names the patterns it takes
def test_the_documented_pattern_prunes_hidden_units_in_both_layers(registered, method):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
    x = torch.randn(5, 6)
    dense = model(x)
    driver = pdp_gpt2.attach(model, method, PDPConfig(pattern="hidden-units", sparsity=0.4, targets=["0", "2"]))
    driver.set_sparsity(0.4)
    driver.finalize()
    rows = (model[0].weight == 0).all(dim=1) & (model[0].bias == 0)
    cols = (model[2].weight == 0).all(dim=0)
    assert int(rows.sum()) == 4 and torch.equal(rows, cols)  # the same 4 of 10 hidden units in both layers
    kept = ~rows  # the pruned model computes the narrower network exactly
    small = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    with torch.no_grad():
        small[0].weight.copy_(model[0].weight[kept])
        small[0].bias.copy_(model[0].bias[kept])
        small[2].weight.copy_(model[2].weight[:, kept])
        small[2].bias.copy_(model[2].bias)
    assert torch.allclose(small(x), model(x), atol=1e-6) and not torch.allclose(model(x), dense)
