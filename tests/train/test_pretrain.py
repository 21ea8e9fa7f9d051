"""pretrain.py: schedule and baseline math by hand, and a tiny end-to-end `pdp-gpt2 pretrain`."""
from __future__ import annotations

import json
import math

import pytest
import torch

from pdp_gpt2.cli import main
from pdp_gpt2.train.pretrain import PretrainConfig, epoch_blocks, lr_at, unigram_perplexity


def test_lr_warms_up_linearly_then_decays_by_cosine_to_the_floor():
    cfg = PretrainConfig(learning_rate=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_at(s, 104, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(54, 104, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the decay
    assert lr_at(104, 104, cfg) == pytest.approx(0.1)


def test_unigram_baseline_by_hand():
    # counts+1 over vocab 2: token 0 -> 3/4, token 1 -> 1/4; scored test tokens [0, 1]
    ppl = unigram_perplexity(torch.tensor([0, 0]), torch.tensor([1, 0, 1]), vocab_size=2)
    assert ppl == pytest.approx(math.exp(-(math.log(3 / 4) + math.log(1 / 4)) / 2))


def test_epoch_blocks_are_a_shuffled_contiguous_cut():
    stream = torch.arange(103)
    blocks = epoch_blocks(stream, 10, torch.Generator().manual_seed(0))
    assert blocks.shape[1] == 10 and blocks.shape[0] in (9, 10)
    rows = sorted(blocks.tolist())
    offset = rows[0][0]
    assert rows == [list(range(offset + 10 * i, offset + 10 * i + 10)) for i in range(len(rows))]


@pytest.mark.slow  # ~7 s: tokenizer, 3 steps, two evaluations, save and reload
def test_pretrain_cli_writes_a_loadable_model_and_record(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"Now is the winter of our discontent, line {i}.\n" for i in range(300)))
    out = tmp_path / "m"
    rc = main(["pretrain", "--output_dir", str(out), "--dataset", str(corpus), "--vocab_size", "300",
               "--n_layer", "1", "--n_embd", "32", "--n_head", "2", "--n_positions", "32",
               "--max_steps", "3", "--batch_size", "4", "--warmup_steps", "1"])
    assert rc == 0
    record = json.loads((out / "pretrain.json").read_text())
    assert record["steps"] == 3 and record["config"]["n_positions"] == 32
    assert record["eval"]["test"]["perplexity"] > 1
    model = AutoModelForCausalLM.from_pretrained(out, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.n_layer == 1 and len(tok) == model.config.vocab_size <= 300
    assert tok.eos_token == tok.bos_token == "<|endoftext|>"
    assert "pdp-gpt2" in (out / "PRETRAIN.md").read_text()


def test_pretrain_rejects_heads_that_do_not_divide_the_width(tmp_path, capsys):
    rc = main(["pretrain", "--output_dir", str(tmp_path / "x"), "--n_embd", "30", "--n_head", "4"])
    assert rc == 2
    assert "--n_head 4 does not divide --n_embd 30" in capsys.readouterr().err


@pytest.mark.parametrize("kw, message", [
    ({"n_embd": 30, "n_head": 4}, "--n_head 4 does not divide --n_embd 30"),
    ({"vocab_size": 256}, "--vocab_size must exceed the 256 byte symbols, got 256"),
    ({"n_positions": 3}, "--n_positions must be at least 4, got 3"),
    ({"epochs": 0, "max_steps": 0}, "give a positive --epochs or --max_steps"),
    ({"dropout": 1.0}, r"--dropout must be in \[0, 1\), got 1.0"),
    ({"batch_size": 0}, "--batch_size must be positive, got 0"),
])
def test_pretrain_config_validates_itself(kw, message):
    from pdp_gpt2.errors import UsageError

    with pytest.raises(UsageError, match=message):
        PretrainConfig(**kw)
    PretrainConfig(epochs=0, max_steps=5)  # either one positive is enough
