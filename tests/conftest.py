"""Shared fixtures: tiny models built from configs (no downloads, milliseconds to build).
The plain functions behind them live in helpers.py (importable from every test folder)."""
from __future__ import annotations

import gc

import pytest
import torch

from helpers import tiny_gpt2, tiny_llama, tiny_tokenizer, write_corpus

THREADS = torch.get_num_threads()  # torch's own choice, what a user's run gets


@pytest.fixture(autouse=True)
def _one_thread_unless_slow(request):
    """One CPU thread for the fast tier: the tiny models' tensors are smaller than what a thread pool's
    hand-offs cost, and on a busy machine a second thread spins waiting for a core.  The slow tier keeps
    torch's choice (its stored outputs were made with it); a test about threads sets its own
    (pdp/test_subnormal.py)."""
    torch.set_num_threads(THREADS if request.node.get_closest_marker("slow") else 1)


def pytest_collection_finish(session):
    """Leave what the imports and the collection made (torch, transformers, matplotlib, every test
    module: hundreds of thousands of objects) out of the garbage collector's full passes, which the
    tiny runs trigger every few tests (accelerate calls gc.collect() at every Trainer)."""
    gc.freeze()


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
