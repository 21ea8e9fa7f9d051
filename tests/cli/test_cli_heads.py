"""`pdp-gpt2 train --pattern heads` on GPT-2: whole heads zeroed, and the run and the export say
that GPT-2's config cannot hold fewer of them."""
from __future__ import annotations

import json

from helpers import train_tiny
from transformers import AutoModelForCausalLM

from pdp_gpt2.pdp.patterns.structures import head_structures, removed_units


def test_gpt2_heads_are_pruned_whole_and_the_shrink_refuses_them_in_one_line(tmp_path, tiny_assets, capsys):
    from pdp_gpt2.cli import main

    rc, out = train_tiny(tmp_path, tiny_assets, "--pattern", "heads", "--sparsity", "0.5")
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["layers"]) == {f"transformer.h.{i}.attn.{n}" for i in (0, 1) for n in ("c_attn", "c_proj")}
    model = AutoModelForCausalLM.from_pretrained(out / "final")
    assert [int(removed_units(st).sum()) for st in head_structures(model)] == [1, 1]  # of 2 heads each
    st = s["structure"]
    assert st["kind"] == "attention heads" and st["widths"] == [[2, 1], [2, 1]]
    assert st["parameters_after_shrink"] == st["parameters"] and "GPT-2 derives head_dim" in st["kept_as_zeros"]
    assert "attention heads 2 -> 1 per layer in 2 layers; kept as zeros (GPT-2" in capsys.readouterr().out
    rc = main(["export", str(out / "final"), "--shrink", "--out", str(tmp_path / "small")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "attention heads stay as zeros: GPT-2 derives head_dim" in err[0], err
    assert not (tmp_path / "small").exists()


def test_a_llama_heads_run_exports_with_fewer_key_value_heads_and_the_same_logits(tmp_path, tiny_assets):
    import torch
    from transformers import AutoTokenizer

    from helpers import tiny_llama
    from pdp_gpt2.cli import main

    model_dir, corpus = tiny_assets
    tok = AutoTokenizer.from_pretrained(model_dir)
    llama = tiny_llama(kv_heads=2)
    llama.resize_token_embeddings(len(tok))
    llama.config.bos_token_id = llama.config.eos_token_id = llama.config.pad_token_id = tok.eos_token_id
    src = tmp_path / "llama"
    llama.save_pretrained(src)
    tok.save_pretrained(src)
    rc, out = train_tiny(tmp_path, (src, corpus), "--pattern", "heads", "--sparsity", "0.5")
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["structure"]["widths"] == [[2, 1], [2, 1]]
    assert main(["export", str(out / "final"), "--shrink", "--out", str(tmp_path / "small")]) == 0
    big = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    small = AutoModelForCausalLM.from_pretrained(tmp_path / "small").eval()
    c = small.config
    assert (c.num_attention_heads, c.num_key_value_heads, c.head_dim) == (2, 1, 16)
    x = torch.randint(0, len(tok), (2, 16))
    with torch.no_grad():
        assert torch.allclose(big(x).logits, small(x).logits, atol=1e-5)
    s = json.loads((out / "summary.json").read_text())["structure"]
    assert sum(p.numel() for p in small.parameters()) == s["parameters_after_shrink"]

