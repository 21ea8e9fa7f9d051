"""PDPConfig refuses a value of the wrong type at construction, one clear message each: a string
for targets pruned every Linear (each character a glob), a string sparsity failed later, and the
strings "false" / "no" counted as True."""
from __future__ import annotations

import pytest

from pdp_gpt2 import PDPConfig
from pdp_gpt2.errors import UsageError


@pytest.mark.parametrize("kw, needle", [
    ({"targets": "*.mlp.*"}, "targets must be a list of module-name patterns, got the string '*.mlp.*'"),
    ({"targets": ["*.mlp.*", 3]}, "targets must be a list of module-name patterns, got 3 in it"),
    ({"sparsity": "0.9"}, "sparsity must be a number, got the string '0.9'"),
    ({"tau": "0.1"}, "tau must be a number"),
    ({"beta": None}, "beta must be a number, got None"),
    ({"max_layer_sparsity": True}, "max_layer_sparsity must be a number, got True"),
    ({"bits": "8"}, "bits must be an integer, got the string '8'"),
    ({"pattern": None}, "pattern must be a string, got None"),
    ({"tau_mode": 1}, "tau_mode must be a string, got 1"),
    ({"quantize": "false"}, "quantize must be True or False, got the string 'false'"),
    ({"improved_masking": "no"}, "improved_masking must be True or False, got the string 'no'"),
    ({"improved_masking": 1}, "improved_masking must be True or False, got 1"),
])
def test_wrong_types_are_refused_with_one_clear_message(kw, needle):
    with pytest.raises(UsageError) as e:
        PDPConfig(**kw)
    assert str(e.value).startswith(needle) and "\n" not in str(e.value), str(e.value)
    assert isinstance(e.value, TypeError)  # a wrong type is a TypeError (and a UsageError: exit 2 in the CLI)


def test_right_types_still_pass():
    cfg = PDPConfig(sparsity=0, targets=("*.mlp.*",), quantize=True, bits=4, tau=1)
    assert cfg.targets == ["*.mlp.*"] and cfg.sparsity == 0 and cfg.quantize is True


def test_a_list_of_targets_selects_only_what_it_names(gpt2):
    from pdp_gpt2.pdp.core.targets import find_targets

    assert {t.name for t in find_targets(gpt2, PDPConfig(targets=["*.mlp.*"]).targets)} == {
        f"transformer.h.{i}.mlp.{n}" for i in range(2) for n in ("c_fc", "c_proj")}
