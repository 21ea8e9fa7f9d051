"""docs/integrate.md's three examples run as written, on a tiny GPT-2 and a few steps.

Only sizes and paths are substituted (a 2000-step ramp does not fit a 4-step test), and the
custom Trainer's elided loss (``...``) becomes the Trainer's own; every other line runs as printed.
"""
from __future__ import annotations

import re

import torch
from helpers import ROOT, Blocks, model_with_dropout
from safetensors.torch import load_file
from transformers import Trainer, TrainingArguments

from pdp_gpt2.pdp.core.targets import find_targets

STEPS = 4
SUBSTITUTE = {
    "ramp_steps=2000": "ramp_steps=2",
    "ramp_steps=1000": "ramp_steps=2",
    '"pruned"': "OUT",
    "...                                     # your loss, untouched":
        "return super().compute_loss(model, inputs, return_outputs, **kw)",
}


def examples() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "integrate.md").read_text(), re.S)
    assert len(blocks) == 3, "docs/integrate.md has three examples; this test runs each"
    out = []
    for b in blocks:
        for old, new in SUBSTITUTE.items():
            b = b.replace(old, new)
        out.append(b)
    return out


def args(tmp_path) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path / "ckpt"), max_steps=STEPS, per_device_train_batch_size=4,
                             learning_rate=3e-3, save_strategy="no", report_to="none", use_cpu=True, seed=0,
                             disable_tqdm=True, dataloader_num_workers=0)


def zeros(path) -> dict[str, float]:
    w = load_file(str(path / "model.safetensors"))
    names = [t.name for t in find_targets(model_with_dropout())]
    return {n: float((w[f"{n}.weight"] == 0).float().mean()) for n in names}


def test_run_clm_plus_one_line(tmp_path):
    trainer = Trainer(model=model_with_dropout(), args=args(tmp_path), train_dataset=Blocks())
    exec(examples()[0], {"trainer": trainer})
    trainer.train()
    trainer.save_model(str(tmp_path / "out"))
    assert all(abs(z - 0.9) < 1e-2 for z in zeros(tmp_path / "out").values())


def test_a_custom_trainer(tmp_path):
    scope = {"Trainer": Trainer, "model": model_with_dropout(), "args": args(tmp_path), "train": Blocks(),
             "resume": None, "OUT": str(tmp_path / "out")}
    exec(examples()[1], scope)
    assert all(abs(z - 0.75) < 1e-2 for z in zeros(tmp_path / "out").values())


def test_a_plain_loop_with_accelerate(tmp_path):
    from accelerate import Accelerator

    data = Blocks()
    loader = torch.utils.data.DataLoader([data[i] for i in range(len(data))], batch_size=4)
    scope = {"torch": torch, "model": model_with_dropout(), "loader": loader, "epochs": 1,
             "accelerator": Accelerator(cpu=True), "OUT": str(tmp_path / "out")}
    exec(examples()[2], scope)
    assert all(abs(z - 0.9) < 1e-2 for z in zeros(tmp_path / "out").values())
