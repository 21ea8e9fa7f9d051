"""Helpers for the tests in every subfolder (``from helpers import tiny_gpt2``): tiny models built
from configs (no downloads, milliseconds to build), a small corpus and its BPE tokenizer.
``tests/`` is on sys.path through pyproject's ``pythonpath``, so any test folder can import this."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent  # the repository root (README.md, docs/, benchmarks/)


def needs(module: str, install: str):
    """Skip (with the reason) where ``module`` is not installed: the extras (wandb, jsonschema, lm_eval), and
    datasets, which a source tree run with PYTHONPATH=src may lack (the library imports it only for hub datasets)."""
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} not installed ({install})")


NEEDS_DATASETS = needs("datasets", 'pip install -e .')
NEEDS_JSONSCHEMA = needs("jsonschema", 'pip install -e ".[dev]"')


def tiny_gpt2(seed: int = 0, n_layer: int = 2, n_embd: int = 64, vocab: int = 128, n_positions: int = 64):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=2, vocab_size=vocab, n_positions=n_positions,
                     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def model_with_dropout(seed: int = 0):
    """A tiny GPT-2 whose dropout is on: resume tests need the RNG state to matter."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=32, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1)
    return GPT2LMHeadModel(cfg)


class Blocks(torch.utils.data.Dataset):
    """Fixed random token blocks, labels = inputs (what run_clm.py's group_texts makes)."""

    def __init__(self, n: int = 64, length: int = 16):
        self.ids = torch.randint(0, 64, (n, length), generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def killed_copy(ref, dst):
    """A finished run as a kill during its final evaluation leaves it: every checkpoint, no result."""
    import shutil

    shutil.copytree(ref, dst)
    for name in ("summary.json", "layers.md"):
        (dst / name).unlink()
    shutil.rmtree(dst / "final")
    return dst


def tiny_llama(seed: int = 0, kv_heads: int = 4):
    """A Linear-based decoder (Llama-style: q/k/v/o + gate/up/down projections); ``kv_heads`` < 4:
    grouped-query attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


# ---- a tiny saved model + corpus for CLI tests ---------------------------------------

CORPUS_LINES = [
    "the quick brown fox jumps over the lazy dog and the dog sleeps in the sun",
    "to be or not to be that is the question whether tis nobler in the mind",
    "all the world is a stage and all the men and women merely players",
    "now is the winter of our discontent made glorious summer by this sun",
]


def write_corpus(path, n_lines: int = 600, seed: int = 0):
    import random

    rnd = random.Random(seed)
    lines = []
    for _ in range(n_lines):
        words = rnd.choice(CORPUS_LINES).split()
        k = rnd.randint(4, len(words))
        lines.append(" ".join(words[:k]))
    path.write_text("\n".join(lines) + "\n")
    return path


def tiny_opt(seed: int = 0):
    """An OPT decoder (q/k/v/out_proj with biases, fc1/fc2)."""
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(seed)
    cfg = OPTConfig(vocab_size=128, hidden_size=64, ffn_dim=128, num_hidden_layers=2, num_attention_heads=4,
                    max_position_embeddings=64, word_embed_proj_dim=64, dropout=0.0, attention_dropout=0.0,
                    bos_token_id=0, eos_token_id=0, pad_token_id=1)
    return OPTForCausalLM(cfg).eval()


def tiny_tokenizer(texts):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


# ---- shared by tests in several folders ------------------------------------------------------

def train_tiny(tmp_path, tiny_assets, *extra):
    """`pdp-gpt2 train` for 12 steps on the tiny assets (ramp 6, log every 2): (exit status, run dir)."""
    from pdp_gpt2.cli import main

    model_dir, corpus = tiny_assets
    out = tmp_path / "run"
    argv = ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--max_steps", "12", "--warmup_steps", "6", "--batch_size", "4", "--max_length", "32",
            "--log_interval", "2", "--progress", "false", "--lr_warmup_steps", "0", *extra]
    return main(argv), out


def pruned_copy(src, dst, sparsity=0.9):
    """The model in src with 90% of each block weight set to exact zeros (smallest magnitudes), saved to dst."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pdp_gpt2.pdp.core.targets import find_targets

    model = AutoModelForCausalLM.from_pretrained(src)
    for t in find_targets(model):
        w = t.module.weight.data
        w.view(-1)[w.abs().view(-1).argsort()[: int(w.numel() * sparsity)]] = 0
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    return dst


def install_dist(site, dist: str, entry_points: str, modules: dict[str, str] | None = None):
    """What ``pip install`` of a distribution leaves in ``site``: its modules and a dist-info whose
    entry_points.txt is ``entry_points`` (the text, so a test can write a malformed one).  Returns
    ``site``; put it on sys.path (monkeypatch.syspath_prepend) or PYTHONPATH to install it."""
    site.mkdir(parents=True, exist_ok=True)
    for name, source in (modules or {}).items():
        (site / f"{name}.py").write_text(source)
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


def without_times(records: list[dict]) -> list[dict]:
    """metrics.jsonl records less their wall times (which no two runs share)."""
    return [{k: v for k, v in r.items() if k not in ("step_seconds", "train_seconds")} for r in records]


def load_script(relpath: str):
    """A script of the repository (benchmarks/, scripts/) imported as a module, by its path from the root."""
    import importlib.util

    path = ROOT / relpath
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
