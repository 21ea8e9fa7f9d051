"""benchmarks/inference.py --shrink: the neurons it zeroes, the parameter share it prints beside each
timing (worked by hand on a tiny GPT-2), the table's ratios and target flags, and the machine tag."""
import json

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from pdp_gpt2.pdp.patterns.structures import mlp_structures

from helpers import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("benchmarks/inference.py")


def _tiny(bench):
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(**bench.TINY)).eval()  # 2 layers, d = 64, MLP width 256, vocab 512


def test_zero_neurons_takes_the_same_count_from_every_mlp_on_both_sides(bench):
    model = bench.zero_neurons(_tiny(bench), 0.25)
    for s in mlp_structures(model):
        c_fc, c_proj = s.members[0].module, s.members[1].module
        dead_out = (c_proj.weight == 0).all(dim=1)
        assert int(dead_out.sum()) == 64
        assert torch.equal((c_fc.weight == 0).all(dim=0) & (c_fc.bias == 0), dead_out)


def test_parameter_share_counts_matmuls_and_the_lm_head_once(bench):
    model = _tiny(bench)
    # per layer: c_attn 64x192 + 192, attn c_proj 64x64 + 64, c_fc 64x256 + 256, mlp c_proj 256x64 + 64;
    # then the LM head 512x64, tied to the token embedding (counted once); wpe and layer norms left out
    per_layer = 64 * 192 + 192 + 64 * 64 + 64 + 64 * 256 + 256 + 256 * 64 + 64
    assert bench.touched_parameters(model) == 2 * per_layer + 512 * 64 == 132224
    models, share, gap = bench.shrink_variants(model, [0.5])
    assert list(models) == ["dense", "50%"] and models["50%"].config.n_inner == 128
    assert share["50%"] == pytest.approx(2 * 128 * (64 + 1 + 64) / 132224)  # a neuron: c_fc column + bias + c_proj row
    assert gap["50%"] < 1e-5


def test_rows_ratios_and_target_flags(bench):
    med = {("dense", "prefill 128"): 2.0, ("dense", "decode"): 0.010,
           ("50%", "prefill 128"): 1.6, ("50%", "decode"): 0.009,
           ("75%", "prefill 128"): 1.6, ("75%", "decode"): 0.008}
    med.update({(v, f"cpu {m}"): t / 2 for (v, m), t in med.items()})  # CPU times: half the wall times
    med[("75%", "cpu prefill 128")] = 0.7  # 30% saved in CPU time
    rows = bench.shrink_rows(med, {"50%": 0.2, "75%": 0.3}, "m", 1, "prefill 128")
    r = rows[0]
    assert (r["removed"], r["measure"], r["dense_ms"], r["shrunk_ms"]) == ("50%", "prefill 128", 2000.0, 1600.0)
    assert r["saved"] == pytest.approx(0.2) and r["saved_over_share"] == pytest.approx(1.0)
    assert (r["dense_cpu_ms"], r["saved_cpu"]) == (1000.0, pytest.approx(0.2))
    assert rows[3]["measure"] == "decode" and rows[3]["saved"] == pytest.approx(0.2)
    lines = bench.shrink_table(rows, 8).splitlines()
    assert lines[2] == "| m | 50% | 1 | prefill 8x128 | 2,000.0 | 1,600.0 | 20.0% | 20.0% | 20.0% | 1.00 ok, 1.00 ok |"
    assert lines[4].endswith("| 20.0% | 30.0% | 30.0% | 0.67 below, 1.00 ok |")  # wall 0.2 / 0.3 < 0.85
    assert lines[3].endswith("| 10.0% | 10.0% | 20.0% | 0.50, 0.50 |")  # decode has no target


def test_machine_tag(bench):
    assert bench.cpu_slug({"cpu": "AMD EPYC 7B13 64-Core Processor", "cpu_capability": "AVX2"}) == \
        "avx2_amd_epyc_7b13_64_core_processor"
    m = bench.machine()
    assert m["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and m["cpus"] >= 1


def test_shrink_mode_writes_its_json(bench, tmp_path):
    out = tmp_path / "s.json"
    bench.main(["--shrink", "--tiny", "--models", "gpt2", "--fractions", "0.5", "--threads", "1", "--reps", "1",
                "--decode_steps", "1", "--seconds", "0", "--json", str(out)])
    res = json.loads(out.read_text())
    assert [(r["removed"], r["measure"]) for r in res["shrink"]["rows"]] == [("50%", "prefill 32"), ("50%", "decode")]
    assert res["shrink"]["batch"] == 8 and len(res["load_before"]) == 3 and res["machine"]["revision"]


def test_the_device_variant_times_every_shrink_with_the_same_logits(tmp_path):
    dev = load_script("benchmarks/shrink_device.py")
    out = tmp_path / "d.json"
    dev.main(["--device", "cpu", "--dtype", "fp32", "--tiny", "--fractions", "0.25,0.5", "--batch", "2",
              "--length", "16", "--past", "8", "--reps", "1", "--json", str(out)])
    res = json.loads(out.read_text())
    assert [(r["removed"], r["measure"]) for r in res["rows"]] == [
        ("25%", "prefill"), ("25%", "decode"), ("50%", "prefill"), ("50%", "decode")]
    assert all(r["dense_ms"] > 0 and r["shrunk_ms"] > 0 for r in res["rows"])
    assert res["rows"][2]["share"] == pytest.approx(2 * res["rows"][0]["share"], rel=0.05)  # twice the neurons
    assert max(res["max_rel_logit_gap"].values()) < 1e-5
