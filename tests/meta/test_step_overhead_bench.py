"""benchmarks/step_overhead.py: its "before" variant computes the same masked weights as the
library, so the before/after table in docs/performance.md compares like with like."""
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

import pdp_gpt2

from helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/step_overhead.py")


def _tiny():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=256, n_positions=64,
                                      bos_token_id=0, eos_token_id=0)).eval()  # eval: no dropout


def test_naive_before_matches_library_masks_and_gradients(bench):
    a, b = _tiny(), _tiny()
    pruner = pdp_gpt2.attach(a, pdp_gpt2.PDPConfig(sparsity=0.9, tau=0.02))
    naive = bench.NaivePDP(b, 0.9, tau=0.02)
    assert len(naive.modules) == len(pruner.targets) == 8
    ids = torch.randint(0, 256, (2, 32), generator=torch.Generator().manual_seed(1))
    for model in (a, b):
        model(input_ids=ids, labels=ids).loss.backward()
    for t, m in zip(pruner.targets, naive.modules):
        wa, wb = t.module.weight, m.weight
        torch.testing.assert_close(wa, wb, rtol=1e-5, atol=1e-7)
        orig = t.module.parametrizations.weight.original
        # the masks really prune: m < 1/2 exactly for the floor(0.9 n) smallest |w|
        assert int((wa.abs() < 0.5 * orig.abs()).sum()) == int(0.9 * wa.numel())
        ga = t.module.parametrizations.weight.original.grad
        gb = m.parametrizations.weight.original.grad
        torch.testing.assert_close(ga, gb, rtol=1e-3, atol=1e-8)  # same math, different op order


def test_benchmark_runs_every_variant_and_reports_ratios(bench, tmp_path):
    out = tmp_path / "r.json"
    bench.main(["--model", "tiny", "--seq", "16", "--batch", "2", "--steps", "2", "--warmup", "1",
                "--mem-steps", "0", "--variants", "gmp,pdp,naive", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["variants"] == ["dense", "gmp", "pdp", "naive"]
    for kind in ("wall", "cpu"):
        ratios = res["time"][kind]["ratio"]
        assert set(ratios) == {"gmp", "pdp", "naive"}
        assert all(r > 0 for r in ratios.values())
    assert all(len(v) == 2 for v in res["time"]["wall_s"].values())
    own = res["time"]["pdp_own_work"]
    # a tiny model's masked weights are kept from forward, not recomputed (KernelOptions.recompute_min_bytes)
    assert own["recompute_s"] == 0.0
    assert own["total_s"] == pytest.approx(own["mask_forward_s"] + own["mask_backward_s"] + own["thresholds_s"])
    assert all(own[k] > 0 for k in own if k != "recompute_s")
    faults = res["time"]["minor_faults"]
    assert set(faults) == {"dense", "gmp", "pdp", "naive"} and all(len(f) == 2 and min(f) >= 0 for f in faults.values())


def test_benchmark_rejects_unknown_variant(bench):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--variants", "pdp,bogus"])
    assert e.value.code == 2


def test_annealed_state_times_each_tau_at_the_target(bench, tmp_path):
    out = tmp_path / "a.json"
    bench.main(["--model", "tiny", "--state", "annealed", "--taus", "0.01,0.001", "--steps", "1", "--warmup", "0",
                "--mem-steps", "0", "--variants", "dense,pdp", "--json", str(out)])
    res = json.loads(out.read_text())
    assert res["state"] == "annealed" and list(res["time_by_tau"]) == ["0.01", "0.001"]
    for t in res["time_by_tau"].values():
        assert len(t["wall_s"]["pdp"]) == 1 and t["wall"]["ratio"]["pdp"] > 0
