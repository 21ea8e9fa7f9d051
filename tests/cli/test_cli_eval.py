"""`pdp-gpt2 eval` end to end on a tiny random GPT-2, its errors, and the embedded model."""
from __future__ import annotations

import json
import math

import pytest
import torch

from pdp_gpt2.data import hub
from pdp_gpt2.cli import main
from pdp_gpt2.data.sources import EMBEDDED_MODEL_DIR, load_split_texts, token_stream
from pdp_gpt2.train.pretrain import train_tokenizer

from helpers import pruned_copy

LINES = [f"Line {i}: to be, or not to be, that is the question {i % 7}.\n" for i in range(200)]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("tiny")
    tok = train_tokenizer(["".join(LINES)], vocab_size=300)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=len(tok), n_positions=64,
                     bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    (root / "corpus.txt").write_text("".join(LINES))
    return root


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    yield
    hub.hub_reachable.cache_clear()


def test_eval_writes_json_with_exact_token_count(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "r.json"
    corpus = str(tiny_model_dir / "corpus.txt")
    rc = main(["eval", "--model", str(tiny_model_dir / "model"), "--dataset", corpus, "--split", "test",
               "--json", str(out), "--no_progress", "--device", "cpu"])
    assert rc == 0
    r = json.loads(out.read_text())
    tok = AutoTokenizer.from_pretrained(tiny_model_dir / "model")
    n = len(token_stream(tok, load_split_texts(corpus, "test")))
    assert r["tokens"] == n - 1  # default stride = window // 2 scores every token but the first
    assert (r["window"], r["stride"]) == (64, 32)
    # a random model over a ~300-token vocabulary is close to uniform
    assert 100 < r["perplexity"] < 600 and math.isclose(r["perplexity"], math.exp(r["nll"]))


@pytest.mark.parametrize("argv, message", [
    (["--model", "/no/such/model/dir"], "model directory not found: /no/such/model/dir"),
    (["--model", "{model}", "--max_length", "65"], "exceeds the model's context of 64"),
    (["--model", "{model}", "--stride", "100", "--max_length", "32"], "--stride 100 exceeds the window"),
    (["--model", "{model}", "--dataset", "{root}/missing.txt"], "dataset file not found"),
    (["--model", "{root}"], "is not a model directory"),
])
def test_eval_usage_errors_exit_2_with_one_line(tiny_model_dir, capsys, argv, message):
    argv = [a.format(model=tiny_model_dir / "model", root=tiny_model_dir) for a in argv]
    assert main(["eval", "--no_progress", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_unreachable_hub_model_fails_fast_with_advice(offline, capsys):
    assert main(["eval", "--model", "nobody-xyz/no-such-model", "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face hub for model 'nobody-xyz/no-such-model'" in err
    assert "local model directory" in err


@pytest.mark.slow
def test_embedded_model_loads_in_plain_transformers_and_reproduces_its_record():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pdp_gpt2.data.perplexity import perplexity

    if not (EMBEDDED_MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("embedded model not built yet")
    size = sum(f.stat().st_size for f in EMBEDDED_MODEL_DIR.iterdir() if f.name.startswith(("model", "tokenizer")))
    assert size <= 12 * 2**20
    model = AutoModelForCausalLM.from_pretrained(EMBEDDED_MODEL_DIR, use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(EMBEDDED_MODEL_DIR)
    assert type(model).__name__ == "GPT2LMHeadModel" and tok.eos_token == "<|endoftext|>"
    record = json.loads((EMBEDDED_MODEL_DIR / "pretrain.json").read_text())
    n_pos = model.config.n_positions
    ids = token_stream(tok, load_split_texts("shakespeare", "test"))
    r = perplexity(model, ids, window=n_pos, stride=n_pos // 2, batch_size=16, progress=False)
    assert r["tokens"] == record["eval"]["test"]["tokens"] == len(ids) - 1
    assert r["perplexity"] == pytest.approx(record["eval"]["test"]["perplexity"], rel=1e-4)
    assert r["perplexity"] < record["eval"]["test"]["unigram_perplexity"] / 2


def test_eval_reads_a_compressed_export_in_both_runtimes(tiny_model_dir, tmp_path):
    from pdp_gpt2.export.writer import export

    src = pruned_copy(tiny_model_dir / "model", tmp_path / "final")
    export(src, tmp_path / "exported")
    corpus = str(tiny_model_dir / "corpus.txt")
    results = {}
    for name, model, runtime in [("final", src, "dense"), ("export", tmp_path / "exported", "dense"),
                                 ("export sparse", tmp_path / "exported", "sparse"),
                                 ("final sparse", src, "sparse")]:
        out = tmp_path / f"{name}.json"
        assert main(["eval", "--model", str(model), "--dataset", corpus, "--runtime", runtime, "--json", str(out),
                     "--no_progress", "--device", "cpu"]) == 0
        results[name] = json.loads(out.read_text())
    assert results["export"]["perplexity"] == results["final"]["perplexity"]  # the same weights, bit for bit
    for name in ("export sparse", "final sparse"):
        assert results[name]["runtime"] == "sparse" and results[name]["tokens"] == results["final"]["tokens"]
        assert results[name]["perplexity"] == pytest.approx(results["final"]["perplexity"], rel=1e-5)


@pytest.mark.parametrize("name, content", [
    ("config.json", '{"model_type": "gpt2", "n_layer": 2}\n'),  # a model's own config: unloadable if replaced
    ("summary.json", '{"method": "pdp", "perplexity": 12.5, "model": "embedded"}\n'),  # a run's record
    ("notes.txt", "not JSON at all\n"),
])
def test_eval_json_refuses_a_file_that_is_not_an_eval_result_before_evaluating(tmp_path, capsys, monkeypatch,
                                                                             name, content):
    import pdp_gpt2.export.loader as loader

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before --json was checked")

    monkeypatch.setattr(loader, "load_for_inference", no_load)
    path = tmp_path / name
    path.write_text(content)
    assert main(["eval", "--json", str(path), "--no_progress", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--json {path}" in err and "not an eval result" in err, err
    assert path.read_text() == content


def test_eval_json_replaces_its_own_earlier_result(tiny_model_dir, tmp_path):
    out = tmp_path / "r.json"
    argv = ["eval", "--model", str(tiny_model_dir / "model"), "--dataset", str(tiny_model_dir / "corpus.txt"),
            "--json", str(out), "--no_progress", "--device", "cpu"]
    assert main(argv + ["--max_length", "32"]) == 0
    first = json.loads(out.read_text())
    assert first["written_by"] == "pdp-gpt2 eval" and first["window"] == 32
    assert main(argv) == 0
    assert json.loads(out.read_text())["window"] == 64 and not list(tmp_path.glob(".r.json.*"))
