"""PDP inside the user's own training code, with no CLI: a plain HF Trainer with the public
PruningCallback, and a plain PyTorch loop with PruningSchedule.  Tiny GPT-2 with dropout
(a resume that lost the RNG state, the data order or the schedule would not be bit-identical)."""
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import Trainer, TrainerCallback, TrainingArguments

import pdp_gpt2
from pdp_gpt2.pdp.callback import STATE_FILE
from pdp_gpt2.pdp.core.targets import find_targets

from helpers import Blocks, model_with_dropout

STEPS, RAMP, SPARSITY = 8, 4, 0.75


class Recorder(TrainerCallback):
    """Stands for a report_to integration: keeps every training log record it is shown."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.logs.append({"step": state.global_step, **logs})


class StopAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def targs(out, steps=STEPS):
    return TrainingArguments(output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=3e-3,
                             logging_steps=1, save_strategy="steps", save_steps=4, report_to="none", use_cpu=True,
                             seed=0, data_seed=0, disable_tqdm=True, dataloader_num_workers=0)


CONFIGS = {
    "pdp_tau_exp_global": ("pdp", pdp_gpt2.PDPConfig(sparsity=SPARSITY, tau=0.02, allocation="global", tau_schedule="exp",
                                                      tau_final=1e-3)),
    "gmp": ("gmp", pdp_gpt2.PDPConfig(sparsity=SPARSITY)),
    "movement": ("movement", pdp_gpt2.PDPConfig(sparsity=SPARSITY)),  # scores: parameters in the optimizer's state
}
RESUMED = {**CONFIGS,  # and whole MLP neurons, units across c_fc and c_proj
           "pdp_neurons": ("pdp", pdp_gpt2.PDPConfig(sparsity=0.5, pattern="neurons")),
           "gmp_neurons": ("gmp", pdp_gpt2.PDPConfig(sparsity=0.5, pattern="neurons")),
           # whole heads, each in three slices of the fused c_attn and a block of c_proj's rows
           "pdp_heads": ("pdp", pdp_gpt2.PDPConfig(sparsity=0.5, pattern="heads")),
           "movement_heads": ("movement", pdp_gpt2.PDPConfig(sparsity=0.5, pattern="heads"))}


def train(out, method, cfg, *, extra=(), resume=False):
    cb = pdp_gpt2.PruningCallback(cfg, method=method, ramp_steps=RAMP)
    trainer = Trainer(model=model_with_dropout(), args=targs(out), train_dataset=Blocks(), callbacks=[cb, *extra])
    trainer.train(resume_from_checkpoint=resume or None)
    return trainer, cb


def saved_zero_counts(path):
    w = load_file(str(path / "model.safetensors"))
    assert not any("parametrizations" in k for k in w)  # a plain checkpoint
    return {t.name: (int((w[f"{t.name}.weight"] == 0).sum()), w[f"{t.name}.weight"].numel())
            for t in find_targets(model_with_dropout(), None)}, w


@pytest.mark.parametrize("name", list(CONFIGS))
def test_trainer_with_the_callback_saves_exact_zeros_and_logs_the_schedule(tmp_path, name):
    method, cfg = CONFIGS[name]
    rec = Recorder()
    trainer, cb = train(tmp_path / "run", method, cfg, extra=[rec])
    trainer.save_model(str(tmp_path / "final"))
    counts, _ = saved_zero_counts(tmp_path / "final")
    for layer, (zeros, n) in counts.items():
        # 'global' allocation: per-layer budgets, exact over all targets together
        if cfg.allocation == "layer":
            assert zeros == int(SPARSITY * n), layer
    total_zeros, total = sum(z for z, _ in counts.values()), sum(n for _, n in counts.values())
    assert abs(total_zeros - SPARSITY * total) <= len(counts)  # each layer rounds down once at most
    # the logged values follow the schedule, and a callback after ours sees them in each record
    assert [r["step"] for r in rec.logs] == list(range(1, STEPS + 1))
    for r in rec.logs:
        assert r["sparsity"] == pytest.approx(pdp_gpt2.sparsity_at("cubic", r["step"], SPARSITY, RAMP))
        assert 0.0 <= r["band"] <= 1.0 and "sparsity_hard" in r and f"layer_sparsity/{next(iter(counts))}" in r
        if method == "pdp":
            assert r["tau"] == pytest.approx(pdp_gpt2.tau_at("exp", r["step"], 0.02, 1e-3, RAMP, STEPS))
    assert rec.logs[-1]["sparsity_hard"] == pytest.approx(SPARSITY, abs=0.01)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["sparsity"] for h in history] == [r["sparsity"] for r in rec.logs]  # and in trainer_state.json
    state = json.loads((tmp_path / "run" / "checkpoint-4" / STATE_FILE).read_text())
    assert state["steps"] == 4 and state["sparsity"] == pytest.approx(SPARSITY)


@pytest.mark.parametrize("name", list(RESUMED))
def test_resume_from_a_mid_run_checkpoint_is_bit_identical(tmp_path, name):
    method, cfg = RESUMED[name]
    a, _ = train(tmp_path / "a", method, cfg)
    a.save_model(str(tmp_path / "a_final"))
    train(tmp_path / "b", method, cfg, extra=[StopAt(4)])  # stops right after checkpoint-4
    assert not (tmp_path / "b" / "checkpoint-8").exists()
    b, _ = train(tmp_path / "b", method, cfg, resume=True)  # a fresh model, masks on, then the checkpoint
    assert b.state.global_step == STEPS
    b.save_model(str(tmp_path / "b_final"))
    _, wa = saved_zero_counts(tmp_path / "a_final")
    _, wb = saved_zero_counts(tmp_path / "b_final")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])]


def test_install_puts_the_metrics_in_front_of_reporting_integrations(tmp_path):
    """report_to integrations run before user callbacks: a recorder in their place sees no pruning
    metrics from callbacks=[...], and sees them all once the callback is installed first."""
    cfg = pdp_gpt2.PDPConfig(sparsity=0.5)  # a 2-step run: its ramp is at most 2 steps (a longer one is refused)
    early = Recorder()
    t = Trainer(model=model_with_dropout(), args=targs(tmp_path / "x", 2), train_dataset=Blocks(),
                callbacks=[early, pdp_gpt2.PruningCallback(cfg, ramp_steps=2)])
    t.train()
    assert early.logs and not any("sparsity" in r for r in early.logs)

    early = Recorder()
    t = Trainer(model=model_with_dropout(), args=targs(tmp_path / "y", 2), train_dataset=Blocks(), callbacks=[early])
    cb = pdp_gpt2.PruningCallback(cfg, ramp_steps=2).install(t)
    assert t.callback_handler.callbacks[0] is cb
    t.train()
    assert [r["sparsity"] for r in early.logs] == [pdp_gpt2.sparsity_at("cubic", s, 0.5, 2) for s in (1, 2)]
    assert all("tau" in r and "band" in r for r in early.logs)


def test_a_callback_added_after_init_refuses_to_resume(tmp_path):
    """Trainer loads a checkpoint before on_train_begin: masks attached then would miss it."""
    cfg = pdp_gpt2.PDPConfig(sparsity=0.5)
    train(tmp_path / "r", "pdp", cfg, extra=[StopAt(4)])
    t = Trainer(model=model_with_dropout(), args=targs(tmp_path / "r"), train_dataset=Blocks())
    t.add_callback(pdp_gpt2.PruningCallback(cfg, ramp_steps=RAMP))
    with pytest.raises(RuntimeError, match="attached before the checkpoint loads"):
        t.train(resume_from_checkpoint=True)


# ---- a plain PyTorch loop with PruningSchedule ---------------------------------------------------

def _loop(model, opt, sched, start, stop, seen):
    data = Blocks()
    for step in range(start, stop):
        batch = data.ids[(4 * step) % 64:(4 * step) % 64 + 4]
        model(input_ids=batch, labels=batch).loss.backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        seen.append((sched.steps, sched.pruner.sparsity, sched.tau))


def _setup(cfg):
    model = model_with_dropout().train()
    pruner = pdp_gpt2.attach(model, cfg)
    sched = pdp_gpt2.PruningSchedule(pruner, STEPS, ramp_steps=RAMP)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    return model, pruner, sched, opt


def test_plain_loop_schedule_exact_zeros_and_bit_identical_resume():
    cfg = pdp_gpt2.PDPConfig(sparsity=SPARSITY, tau=0.02, tau_schedule="cosine", tau_final=1e-3)
    model, pruner, sched, opt = _setup(cfg)  # model_with_dropout seeds torch: both runs draw the same dropout
    seen = []
    _loop(model, opt, sched, 0, STEPS, seen)
    assert [s for s, _, _ in seen] == list(range(1, STEPS + 1))
    assert [sp for _, sp, _ in seen] == [pytest.approx(pdp_gpt2.sparsity_at("cubic", s, SPARSITY, RAMP))
                                         for s in range(1, STEPS + 1)]
    assert [tau for _, _, tau in seen] == [pytest.approx(pdp_gpt2.tau_at("cosine", s, 0.02, 1e-3, RAMP, STEPS))
                                           for s in range(1, STEPS + 1)]
    pruner.finalize()
    full = {k: v.clone() for k, v in model.state_dict().items()}
    for t in find_targets(model, None):
        assert int((t.module.weight == 0).sum()) == int(SPARSITY * t.module.weight.numel()), t.name

    # the same run, checkpointed at step 4 (the schedule's state through JSON) and continued from scratch
    model, pruner, sched, opt = _setup(cfg)
    _loop(model, opt, sched, 0, 4, [])
    ckpt = {"model": {k: v.clone() for k, v in model.state_dict().items()},
            "opt": json.loads(json.dumps(sched.state_dict())), "rng": torch.get_rng_state()}
    opt_state = opt.state_dict()
    del model, pruner, sched, opt
    model, pruner, sched, opt = _setup(cfg)  # attach, build the schedule, then load
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(opt_state)
    sched.load_state_dict(ckpt["opt"])
    torch.set_rng_state(ckpt["rng"])
    assert sched.steps == 4 and pruner.sparsity == pytest.approx(SPARSITY)
    _loop(model, opt, sched, 4, STEPS, [])
    pruner.finalize()
    resumed = model.state_dict()
    assert resumed.keys() == full.keys()
    assert all(torch.equal(full[k], resumed[k]) for k in full)
