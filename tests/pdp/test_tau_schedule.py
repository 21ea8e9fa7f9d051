"""tau schedules: values worked by hand, validation, gradients at an annealed tau, and a short
run annealed to a tiny tau whose soft model is its hard model."""
import json
import math

import pytest
import torch

import pdp_gpt2
from pdp_gpt2 import PDPConfig, UsageError, tau_at
from pdp_gpt2.cli import main
from pdp_gpt2.pdp.core.targets import find_targets

# tau0 = 0.02 -> tau_final = 2e-4 (a factor 100) over the window [10, 20]
T0, TF, START, END = 0.02, 2e-4, 10, 20


def test_constant_keeps_tau():
    assert [tau_at("constant", s, T0, None, START, END) for s in (0, 10, 15, 30)] == [T0] * 4


def test_exp_is_geometric_in_the_window():
    exp = [tau_at("exp", s, T0, TF, START, END) for s in (0, 10, 12, 15, 20, 25)]
    # p = 0.2: 0.02 * 100^-0.2 = 0.02 * 10^-0.4;  p = 0.5: the geometric mean 0.002
    assert exp == pytest.approx([0.02, 0.02, 0.02 * 10 ** -0.4, 0.002, 2e-4, 2e-4], rel=1e-12)
    # a constant ratio per step
    ratios = [tau_at("exp", s + 1, T0, TF, START, END) / tau_at("exp", s, T0, TF, START, END) for s in range(10, 20)]
    assert ratios == pytest.approx([0.01 ** 0.1] * 10, rel=1e-12)


def test_cosine_is_cosine_in_log_tau():
    cos = [tau_at("cosine", s, T0, TF, START, END) for s in (0, 10, 12, 15, 18, 20, 25)]
    # p = 0.2: weight (1 + cos(0.2 pi)) / 2 = (1 + 0.80902) / 2 = 0.90451 on log tau0
    w = (1 + 0.8090169943749475) / 2
    assert cos == pytest.approx([0.02, 0.02, 2e-4 * 100 ** w, 0.002, 2e-4 * 100 ** (1 - w), 2e-4, 2e-4], rel=1e-12)
    assert cos[2] == pytest.approx(0.0128839, rel=1e-5)  # gentler than exp's 0.0079621 early on


def test_an_empty_window_switches_at_its_start():
    assert tau_at("exp", 9, T0, TF, 10, 10) == T0 and tau_at("exp", 10, T0, TF, 10, 10) == TF


@pytest.mark.parametrize("kw, msg", [
    (dict(tau=float("inf")), "tau must be > 0 and finite"),
    (dict(tau=float("nan")), "tau must be > 0 and finite"),
    (dict(tau_schedule="linear"), "tau_schedule must be constant, exp or cosine"),
    (dict(tau_schedule="constant", tau_final=1e-3), "tau_final needs tau_schedule exp or cosine"),
    (dict(tau_schedule="cosine", tau_final=0.0), "tau_final must be > 0 and finite"),
    (dict(tau_schedule="cosine", tau_final=float("inf")), "tau_final must be > 0 and finite"),
])
def test_config_validation(kw, msg):
    with pytest.raises(UsageError, match=msg):
        PDPConfig(**kw)


def test_cli_flags_reach_the_config():
    from pdp_gpt2.cli.main import build_parser
    from pdp_gpt2.cli.train import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "--tau_schedule", "exp", "--tau_final", "1e-4"]))
    assert cfg.pdp.tau_schedule == "exp" and cfg.pdp.tau_final == 1e-4
    default = config_from_args(build_parser().parse_args(["train"])).pdp
    assert (default.tau, default.tau_schedule, default.tau_final) == (0.1, "exp", pytest.approx(1e-3))
    old = config_from_args(build_parser().parse_args(["train", "--tau", "0.02", "--tau_schedule", "constant"])).pdp
    assert (old.tau, old.tau_schedule, old.tau_final) == (0.02, "constant", None)


def test_gradient_at_an_annealed_tau_is_the_analytic_one(gpt2):
    pruner = pdp_gpt2.attach(gpt2, PDPConfig(sparsity=0.5, tau=0.02, tau_schedule="exp", tau_final=1e-3))
    sched = pdp_gpt2.PruningSchedule(pruner, total_steps=20, ramp_steps=0)  # window [0, 20]
    for _ in range(10):
        sched.step()
    tau = 0.02 * 20 ** -0.5  # halfway: the geometric mean of 0.02 and 1e-3
    assert sched.tau == pytest.approx(tau)
    t = find_targets(gpt2, None)[0]
    mask = t.module.parametrizations.weight[0]
    assert mask.tau == pytest.approx(tau)
    w = t.module.parametrizations.weight.original
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(0))
    (t.module.weight * g).sum().backward()
    with torch.no_grad():
        thr = mask.t
        m = torch.sigmoid((w * w / (thr * thr) - 1) / tau)
        # d(m w)/dw = m + w dm/dw,  dm/dw = 2 w m (1 - m) / (tau t^2)  (relative mode)
        analytic = g * (m + 2 * w * w * m * (1 - m) / (tau * thr * thr))
    assert torch.allclose(w.grad, analytic, rtol=1e-4, atol=1e-6)
    # the annealed tau is what the gradient used: at the start tau it differs
    with torch.no_grad():
        m0 = torch.sigmoid((w * w / (thr * thr) - 1) / 0.02)
        at_start = g * (m0 + 2 * w * w * m0 * (1 - m0) / (0.02 * thr * thr))
    assert not torch.allclose(w.grad, at_start, rtol=1e-2, atol=1e-4)


def test_set_tau_rejects_bad_values(gpt2):
    pruner = pdp_gpt2.attach(gpt2, PDPConfig(sparsity=0.5))
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError):
            pruner.set_tau(bad)


def test_a_run_annealed_to_a_tiny_tau_has_soft_equal_to_hard_perplexity(tmp_path, tiny_assets):
    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    argv = ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "12", "--warmup_steps", "6", "--batch_size", "4", "--max_length", "32",
            "--log_interval", "2", "--save_steps", "8", "--progress", "false", "--lr_warmup_steps", "0",
            "--sparsity", "0.75", "--tau", "0.3", "--tau_schedule", "exp", "--tau_final", "1e-4"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["tau"] for r in lines] == pytest.approx([tau_at("exp", s, 0.3, 1e-4, 6, 12) for s in (2, 4, 6, 8, 10, 12)])
    assert lines[-1]["tau"] == pytest.approx(1e-4)
    # the masks harden: at the end of the ramp (tau 0.3) a wide band, at tau 1e-4 none left
    assert lines[2]["step"] == 6 and lines[2]["band"] > 0.1 and lines[-1]["band"] < 1e-3
    assert json.loads((out / "checkpoint-8" / "pdp_state.json").read_text())["tau"] == pytest.approx(
        tau_at("exp", 8, 0.3, 1e-4, 6, 12))
    s = json.loads((out / "summary.json").read_text())
    # (a random tiny model: its perplexity barely reacts to tau, so the band above is the sharper check)
    assert abs(s["perplexity_soft"] / s["perplexity"] - 1) < 0.005, (s["perplexity_soft"], s["perplexity"])


def test_shipped_default_anneals_tau_by_two_decades():
    """The default (docs/results.md): exp from tau 0.1 to tau/100; tau_final follows a given tau;
    constant needs no end and refuses one."""
    d = PDPConfig()
    assert (d.tau, d.tau_schedule, d.tau_final) == (0.1, "exp", pytest.approx(1e-3))
    assert PDPConfig(tau=0.3).tau_final == pytest.approx(3e-3)
    assert PDPConfig(tau=0.02, tau_schedule="constant").tau_final is None
    assert PDPConfig(tau_schedule="cosine", tau_final=5e-4).tau_final == 5e-4


def test_cli_refuses_an_end_without_an_annealing_in_one_line(tmp_path, capsys):
    assert main(["train", "--tau_schedule", "constant", "--tau_final", "1e-3", "--output_dir", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "tau_final needs tau_schedule" in err, err
    assert not (tmp_path / "x").exists()
