"""--distill: the loss by hand on tiny logits, the Trainer integration on a tiny GPT-2, the run's files,
and a resume that ends bit-identical to the uninterrupted distilled run."""
from __future__ import annotations

import json
import math
import os
import signal

import pytest
import torch
from safetensors.torch import load_file

from pdp_gpt2.cli import main
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.config import TrainConfig
from pdp_gpt2.train.distill import DistillMixin, distill_loss, frozen_copy, kl_per_position

from helpers import tiny_gpt2, train_tiny

LN3 = math.log(3.0)
# student uniform over 2 tokens, teacher at T=2 gives (1/4, 3/4): KL(p_t || p_s) = 1/4 ln(1/2) + 3/4 ln(3/2)
KL_BY_HAND = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)  # 0.130812...


def _one(student, teacher):  # one sequence of positions over a 2-token vocabulary
    return torch.tensor([student], dtype=torch.float64), torch.tensor([teacher], dtype=torch.float64)


# ---- the pure function, by hand ---------------------------------------------------------------

def test_kl_by_hand_and_its_direction():
    s, t = torch.tensor([0.0, 0.0]), torch.tensor([0.0, 2 * LN3])  # softmax(t / 2) = (1/4, 3/4)
    assert kl_per_position(s, t, 2.0).item() == pytest.approx(KL_BY_HAND, abs=1e-7)
    # the other direction, KL(p_s || p_t) = 1/2 ln 2 + 1/2 ln(2/3), is a different number: not what we compute
    assert kl_per_position(s, t, 2.0).item() != pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-3)
    assert kl_per_position(t, t, 2.0).item() == 0.0  # identical logits: exactly 0


def test_alpha_zero_is_the_lm_loss_and_alpha_one_is_t2_kl():
    s, t = _one([[0.0, 0.0], [5.0, -5.0]], [[0.0, 2 * LN3], [1.0, 1.0]])
    labels = torch.tensor([[7, 7]])  # position 0 predicts label 1 (counted); position 1 is the last (never)
    lm = torch.tensor(3.25, dtype=torch.float64)
    assert distill_loss(lm, s, t, labels, alpha=0.0, temperature=2.0).item() == 3.25
    assert distill_loss(lm, s, t, labels, alpha=1.0, temperature=2.0).item() == pytest.approx(4 * KL_BY_HAND, abs=1e-7)
    half = distill_loss(lm, s, t, labels, alpha=0.5, temperature=2.0).item()
    assert half == pytest.approx(0.5 * 3.25 + 0.5 * 4 * KL_BY_HAND, abs=1e-7)


def test_ignored_positions_do_not_count_and_the_kl_is_a_mean_per_token():
    # positions 0..3; labels[2] = -100 drops position 1; position 3 is last. Positions 1 and 3 get a huge KL.
    s, t = _one([[0.0, 0.0], [30.0, -30.0], [0.0, 0.0], [30.0, -30.0]],
                [[0.0, 2 * LN3], [-30.0, 30.0], [0.0, 2 * LN3], [-30.0, 30.0]])
    labels = torch.tensor([[1, 1, -100, 1]])
    lm = torch.tensor(0.0, dtype=torch.float64)
    got = distill_loss(lm, s, t, labels, alpha=1.0, temperature=2.0).item()
    assert got == pytest.approx(4 * KL_BY_HAND, abs=1e-7)  # (KL0 + KL2) / 2 counted tokens, both KL_BY_HAND
    # Trainer's token count (gradient accumulation, several processes) replaces this batch's own count
    assert distill_loss(lm, s, t, labels, alpha=1.0, temperature=2.0, num_items=4).item() == \
        pytest.approx(4 * 2 * KL_BY_HAND / 4, abs=1e-7)
    everything_ignored = torch.full_like(labels, -100)
    assert distill_loss(lm, s, t, everything_ignored, alpha=1.0, temperature=2.0).item() == 0.0


def test_the_gradient_pulls_the_student_to_the_teacher():
    # d(T^2 KL)/d(student logits) = T (p_s - p_t): at T = 2, (1/2, 1/2) - (1/4, 3/4) -> 2 * (1/4, -1/4)
    s = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]], requires_grad=True)
    t = torch.tensor([[[0.0, 2 * LN3], [0.0, 0.0]]])
    distill_loss(torch.tensor(0.0), s, t, torch.tensor([[1, 1]]), alpha=1.0, temperature=2.0).backward()
    assert torch.allclose(s.grad[0, 0], torch.tensor([0.5, -0.5]), atol=1e-6)
    assert torch.equal(s.grad[0, 1], torch.zeros(2))  # the last position has no target
    with torch.no_grad():  # one step down the gradient lowers the KL
        before = kl_per_position(s[0, 0], t[0, 0], 2.0)
        after = kl_per_position(s[0, 0] - 0.5 * s.grad[0, 0], t[0, 0], 2.0)
    assert after < before


@pytest.mark.parametrize("alpha, temperature", [(-0.1, 2.0), (1.5, 2.0), (0.5, 0.0)])
def test_bad_alpha_or_temperature_is_a_value_error(alpha, temperature):
    s, t = _one([[0.0, 0.0]], [[0.0, 0.0]])
    with pytest.raises(ValueError):
        distill_loss(torch.tensor(0.0), s, t, torch.tensor([[1]]), alpha=alpha, temperature=temperature)


# ---- the flags ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, words", [({"distill": 1.5}, "distill must be in [0, 1]"),
                                       ({"distill": -0.5}, "distill must be in [0, 1]"),
                                       ({"distill": float("nan")}, "distill must be in [0, 1]"),
                                       ({"distill_temperature": 0.0}, "distill_temperature must be > 0"),
                                       ({"distill_temperature": float("inf")}, "distill_temperature must be > 0")])
def test_bad_distill_flags_are_one_line(kw, words):
    with pytest.raises(UsageError) as e:
        TrainConfig(**kw)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_the_cli_refuses_a_bad_alpha_before_any_work(tmp_path, capsys):
    assert main(["train", "--distill", "2", "--output_dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "distill must be in [0, 1]" in err
    assert not (tmp_path / "run").exists()


def test_defaults_are_off_and_t_2():
    cfg = TrainConfig()
    assert (cfg.distill, cfg.distill_temperature) == (0.0, 2.0)


# ---- the Trainer integration on a tiny GPT-2 -----------------------------------------------------

def test_frozen_copy_is_a_detached_eval_copy():
    model = tiny_gpt2().train()
    teacher = frozen_copy(model)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert model.training and all(p.requires_grad for p in model.parameters())
    w, wt = model.transformer.h[0].mlp.c_fc.weight, teacher.transformer.h[0].mlp.c_fc.weight
    assert torch.equal(w, wt) and w.data_ptr() != wt.data_ptr()


def _trainer(tmp_path, model, data, **args):
    from transformers import Trainer, TrainingArguments, default_data_collator

    class DistillTrainer(DistillMixin, Trainer):
        pass

    targs = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to="none",
                              use_cpu=True, save_strategy="no", learning_rate=1e-2, lr_scheduler_type="constant",
                              max_grad_norm=0.0, seed=0, data_seed=0, disable_tqdm=True, **args)
    return DistillTrainer(model=model, args=targs, train_dataset=data, data_collator=default_data_collator)


class Blocks(torch.utils.data.Dataset):
    def __init__(self, n=4, length=16, seed=0):
        self.x = torch.randint(0, 128, (n, length), generator=torch.Generator().manual_seed(seed))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i].clone()}


def test_compute_loss_is_the_formula_on_the_model_and_teacher(tmp_path):
    model, teacher = tiny_gpt2(seed=0).train(), frozen_copy(tiny_gpt2(seed=1))
    teacher.lm_head.weight.data.mul_(20)  # tied to the embeddings: a confident teacher, far from the student
    trainer = _trainer(tmp_path, model, Blocks()).distill_from(teacher, alpha=0.3, temperature=2.0)
    batch = {k: torch.stack([Blocks()[i][k] for i in range(4)]) for k in ("input_ids", "labels")}
    labels = batch["labels"].clone()
    labels[0, 5:9] = -100  # ignored tokens: the KL skips them as the LM loss does
    batch["labels"] = labels
    got = trainer.compute_loss(model, dict(batch))
    out = model(**batch)
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"]).logits
    keep = labels[:, 1:] != -100
    kl = kl_per_position(out.logits[:, :-1], t_logits[:, :-1], 2.0)[keep].mean()
    assert got.item() == pytest.approx(0.7 * out.loss.item() + 0.3 * 4 * kl.item(), rel=1e-5)
    assert 0.3 * 4 * kl.item() > 0.1  # a different teacher: the KL term is really there
    model.eval()  # an evaluation loss stays the plain LM loss
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(model(**batch).loss.item(), rel=1e-6)


def test_a_teacher_equal_to_the_student_adds_nothing_at_the_start(tmp_path):
    model = tiny_gpt2().train()  # no dropout in the tiny config: student == teacher before any step
    trainer = _trainer(tmp_path, model, Blocks()).distill_from(frozen_copy(model), alpha=0.5)
    batch = {k: torch.stack([Blocks()[i][k] for i in range(4)]) for k in ("input_ids", "labels")}
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(0.5 * model(**batch).loss.item(), rel=1e-6)


def test_gradient_accumulation_gives_the_same_step_as_one_batch(tmp_path):
    """The KL is averaged over Trainer's token count of the whole accumulated batch, as the LM loss is:
    one step on 4 sequences equals two micro-batches of 2 accumulated."""
    teacher = frozen_copy(tiny_gpt2(seed=1))
    weights = []
    for batch, accum in ((4, 1), (2, 2)):
        model = tiny_gpt2(seed=0).train()
        trainer = _trainer(tmp_path / f"b{batch}", model, Blocks(), max_steps=1, gradient_accumulation_steps=accum)
        trainer.args.per_device_train_batch_size = batch
        trainer.distill_from(teacher, alpha=0.5).train()
        weights.append(model.transformer.h[0].mlp.c_fc.weight.detach().clone())
    # AdamW's first step moves a weight by lr * g / (|g| + eps): where |g| is near eps (1e-8) the last bits
    # of the accumulated gradient show, up to ~2e-6 here on the AVX2 kernels of torch 2.6 (lr 1e-2)
    assert torch.allclose(weights[0], weights[1], atol=1e-5), (weights[0] - weights[1]).abs().max()
    assert not torch.equal(weights[0], tiny_gpt2(seed=0).transformer.h[0].mlp.c_fc.weight)


# ---- a run -------------------------------------------------------------------------------------

@pytest.mark.slow  # two 12-step runs
def test_a_distilled_run_records_it_and_trains_differently(tmp_path, tiny_assets):
    rc, run = train_tiny(tmp_path / "d", tiny_assets, "--method", "gmp", "--distill", "0.5",
                         "--distill_temperature", "3")
    assert rc == 0
    s = json.loads((run / "summary.json").read_text())
    assert s["distill"]["alpha"] == 0.5 and s["distill"]["temperature"] == 3.0
    assert (s["config"]["distill"], s["config"]["distill_temperature"]) == (0.5, 3.0)
    card = (run / "final" / "README.md").read_text()
    assert "--distill 0.5 --distill_temperature 3.0" in card and "| distillation | from the starting model" in card
    rc, plain = train_tiny(tmp_path / "p", tiny_assets, "--method", "gmp")
    assert rc == 0 and json.loads((plain / "summary.json").read_text())["distill"] is None
    wa, wb = load_file(run / "final" / "model.safetensors"), load_file(plain / "final" / "model.safetensors")
    assert any(not torch.equal(wa[k], wb[k]) for k in wa)
    from pdp_gpt2.report.report import load_run

    assert (load_run(run).label, load_run(plain).label) == ("gmp+distill", "gmp")


def _sigterm_at(monkeypatch, step: int) -> None:
    from pdp_gpt2.train.guard import RunGuard

    real = RunGuard.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step and not self.signum:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(self, args, state, control, **kwargs)

    monkeypatch.setattr(RunGuard, "on_step_end", on_step_end)


@pytest.mark.slow  # an uninterrupted run, a stopped one and its resume
def test_a_stopped_distilled_run_resumes_bit_identically(tmp_path, tiny_assets, monkeypatch, capsys):
    """The teacher is not in the checkpoint: the resumed run makes it again from --model, before the
    checkpoint's weights load into the student, and must end on the uninterrupted run's exact bits."""
    model, corpus = tiny_assets

    def argv(out, *extra):
        return ["train", "--model", str(model), "--dataset", str(corpus), "--output_dir", str(out),
                "--max_steps", "6", "--warmup_steps", "4", "--batch_size", "4", "--max_length", "32",
                "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0", "--sparsity", "0.75",
                "--distill", "0.5", "--seed", "3", *extra]

    assert main(argv(tmp_path / "a")) == 0
    with monkeypatch.context() as m:
        _sigterm_at(m, 3)
        assert main(argv(tmp_path / "b")) == 128 + signal.SIGTERM
    assert (tmp_path / "b" / "checkpoint-3").is_dir() and not (tmp_path / "b" / "summary.json").exists()
    from pdp_gpt2.train import distill

    teachers = []
    monkeypatch.setattr(distill, "frozen_copy", lambda m: teachers.append(frozen_copy(m)) or teachers[-1])
    assert main(argv(tmp_path / "b", "--resume")) == 0
    start, ckpt = load_file(model / "model.safetensors"), load_file(tmp_path / "b" / "checkpoint-3" / "model.safetensors")
    key = "transformer.h.0.mlp.c_fc.weight"
    taught = teachers[0].state_dict()[key]
    assert len(teachers) == 1 and torch.equal(taught, start[key])  # the starting model, not the checkpoint's student
    assert not torch.equal(taught, ckpt.get(key, ckpt.get(key.replace(".weight", ".parametrizations.weight.original"))))
    wa = load_file(tmp_path / "a" / "final" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    capsys.readouterr()
    fork = argv(tmp_path / "c", "--resume", str(tmp_path / "b" / "checkpoint-3"), "--distill", "0.25")
    assert main(fork) == 2  # another alpha than the checkpoint was trained with: refused
    assert "--resume with different --distill than the run" in capsys.readouterr().err


def test_your_own_trainer_with_pruning_callback_and_distill_mixin(tmp_path):
    """docs/api.md's snippet: DistillMixin in a user's Trainer next to the public PruningCallback."""
    from transformers import Trainer, TrainingArguments, default_data_collator

    from pdp_gpt2 import PDPConfig, PruningCallback

    class MyTrainer(DistillMixin, Trainer):
        pass

    model = tiny_gpt2().train()
    teacher = frozen_copy(model)  # before the callback attaches its masks (inside Trainer(...))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=2, report_to="none",
                             use_cpu=True, save_strategy="no", disable_tqdm=True, learning_rate=1e-3)
    trainer = MyTrainer(model=model, args=args, train_dataset=Blocks(n=8), data_collator=default_data_collator,
                        callbacks=[PruningCallback(PDPConfig(sparsity=0.5), method="gmp", ramp_steps=2)])
    seen = []
    real = trainer.compute_loss
    trainer.compute_loss = lambda *a, **k: seen.append(trainer.teacher is teacher) or real(*a, **k)
    trainer.distill_from(teacher, alpha=0.5).train()
    assert seen == [True] * 4
    w = model.transformer.h[0].mlp.c_fc.weight
    assert int((w == 0).sum()) == w.numel() // 2  # finalized at the target by the callback
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())  # the teacher: untouched, dense
    assert not any("parametrizations" in k for k in teacher.state_dict())
