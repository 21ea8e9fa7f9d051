"""Sliding-window perplexity: window bookkeeping, exact NLL sums, batching, modes."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from pdp_gpt2.data.perplexity import perplexity, plan_windows, scored_tokens


class BigramModel(torch.nn.Module):
    """Logits depend only on the current token, so the ideal NLL is known in closed form."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table.clone())

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.table[input_ids])


def exact_bigram_nll(table: torch.Tensor, ids: torch.Tensor) -> float:
    logp = F.log_softmax(table, dim=-1)
    return -logp[ids[:-1], ids[1:]].mean().item()


def tiny_gpt2(n_positions: int = 32):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50, n_positions=n_positions,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.mark.parametrize("n, window, stride", [(100, 10, 5), (100, 10, 9), (101, 16, 1), (37, 8, 3), (5, 64, 32)])
def test_every_token_but_the_first_is_scored_exactly_once(n, window, stride):
    windows = plan_windows(n, window, stride)
    scored = [w.begin + j for w in windows for j in range(w.score_from, w.end - w.begin)]
    assert sorted(scored) == list(range(1, n))
    assert scored_tokens(windows) == n - 1
    assert all(w.end - w.begin <= window for w in windows)


def test_non_overlapping_windows_skip_each_window_start():
    windows = plan_windows(25, 10, 10)
    assert [(w.begin, w.end, w.score_from) for w in windows] == [(0, 10, 1), (10, 20, 1), (20, 25, 1)]
    assert scored_tokens(windows) == 25 - 3


def test_uniform_model_has_perplexity_equal_to_vocab_size():
    model = BigramModel(torch.zeros(7, 7))
    r = perplexity(model, torch.randint(0, 7, (50,)), window=8, stride=4, progress=False)
    assert r["perplexity"] == pytest.approx(7.0, rel=1e-6)
    assert r["tokens"] == 49


@pytest.mark.parametrize("window, stride, batch_size", [(8, 4, 3), (8, 1, 8), (16, 16, 2), (5, 3, 1)])
def test_context_free_model_matches_the_closed_form(window, stride, batch_size):
    torch.manual_seed(1)
    table = torch.randn(5, 5) * 2
    ids = torch.randint(0, 5, (61,))
    r = perplexity(BigramModel(table), ids, window=window, stride=stride, batch_size=batch_size, progress=False)
    if stride < window:
        assert r["tokens"] == 60
        assert r["nll"] == pytest.approx(exact_bigram_nll(table, ids), rel=1e-6)
    else:  # window starts are not scored
        starts = torch.arange(0, 61, window)
        kept = [i for i in range(1, 61) if i not in set(starts.tolist())]
        logp = F.log_softmax(table, dim=-1)
        expected = -sum(logp[ids[i - 1], ids[i]].item() for i in kept) / len(kept)
        assert r["tokens"] == len(kept)
        assert r["nll"] == pytest.approx(expected, rel=1e-6)
    assert r["perplexity"] == pytest.approx(math.exp(r["nll"]))


def test_stride_equal_to_window_matches_manual_chunked_loss():
    model = tiny_gpt2()
    ids = torch.randint(0, 50, (90,), generator=torch.Generator().manual_seed(2))
    total, count = 0.0, 0
    with torch.no_grad():
        for chunk in ids.split(32):  # 32, 32, 26
            total += model(input_ids=chunk[None], labels=chunk[None]).loss.item() * (len(chunk) - 1)
            count += len(chunk) - 1
    r = perplexity(model, ids, window=32, stride=32, batch_size=2, progress=False)
    assert r["tokens"] == count == 87
    assert r["nll"] == pytest.approx(total / count, rel=1e-5)


def test_batching_does_not_change_the_result_and_mode_is_restored():
    model = tiny_gpt2().train()
    ids = torch.randint(0, 50, (200,), generator=torch.Generator().manual_seed(3))
    one = perplexity(model, ids, window=32, stride=8, batch_size=1, progress=False)
    many = perplexity(model, ids, window=32, stride=8, batch_size=7, progress=False)
    assert one["tokens"] == many["tokens"] == 199
    assert one["nll"] == pytest.approx(many["nll"], rel=1e-5)
    assert model.training  # restored


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="stride"):
        plan_windows(10, 4, 5)
    with pytest.raises(ValueError, match="1-D"):
        perplexity(BigramModel(torch.zeros(3, 3)), torch.zeros(2, 2, dtype=torch.long), 4, 2, progress=False)
