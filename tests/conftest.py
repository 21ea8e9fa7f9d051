"""Shared fixtures: tiny models built from configs (no downloads, milliseconds to build).
The plain functions behind them live in helpers.py (importable from every test folder)."""
from __future__ import annotations

import pytest

from helpers import tiny_gpt2, tiny_llama, tiny_tokenizer, write_corpus


@pytest.fixture
def gpt2():
    return tiny_gpt2()


@pytest.fixture
def llama():
    return tiny_llama()


@pytest.fixture(scope="session")
def tiny_assets(tmp_path_factory):
    """(model_dir, corpus_file): a 2-layer GPT-2 + its BPE tokenizer, and a small text file."""
    root = tmp_path_factory.mktemp("tiny")
    corpus = write_corpus(root / "corpus.txt")
    tok = tiny_tokenizer([corpus.read_text()])
    model = tiny_gpt2(vocab=len(tok), n_positions=64)
    model.config.eos_token_id = model.config.bos_token_id = tok.eos_token_id
    model_dir = root / "model"
    model.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return model_dir, corpus
