"""--streaming: the same blocks as the in-memory path, a buffer that does not grow with the corpus."""
import json
import random

import pytest
import torch

from helpers import CORPUS_LINES, NEEDS_DATASETS, tiny_tokenizer
from pdp_gpt2.data import streaming as S
from pdp_gpt2.cli import main
from pdp_gpt2.data.sources import load_split_texts, token_stream, tokenize_and_group


def test_cut_points_by_hand():
    # GPT-2's pre-tokenizer splits "x\n\n  y" as x | \n\n␠ | ␠y: cut before the run's last character.
    assert S._cut_at("x\n", "\n  y") == 2  # nxt[:2] = "\n " stays behind, " y" starts the next segment
    assert S._cut_at("x\n", " y") == 0
    assert S._cut_at("x \n", "y") == -1  # the run " \n" ends in prev: its "\n" moves over
    assert S._cut_at("x\n", "  \n") is None  # the run continues into the next piece
    assert S._cut_at("x", "y") is None  # not at whitespace: never cut inside a word


def _whitespace_corpus(path, n_lines, seed=0):
    """Lines with leading/trailing runs and blank lines: the cases where a careless cut changes tokens."""
    rnd = random.Random(seed)
    words = " ".join(CORPUS_LINES).split()
    with open(path, "w") as f:
        for _ in range(n_lines):
            f.write(rnd.choice(["", "", " ", "  ", "    ", "\t"]) + " ".join(rnd.choices(words, k=rnd.randint(0, 9)))
                    + rnd.choice(["", "", " ", "  "]) + "\n" * rnd.choice([1, 1, 2, 3]))
    return path


@pytest.fixture(scope="module")
def ws_corpus(tmp_path_factory):
    path = _whitespace_corpus(tmp_path_factory.mktemp("ws") / "ws.txt", 3000)
    tok = tiny_tokenizer([path.read_text()])
    assert "ĊĊ" in tok.get_vocab() and "ĠĠ" in tok.get_vocab()  # merges that a bad cut would split
    return path, tok


@pytest.mark.parametrize("split", ["train", "test"])
def test_stream_blocks_equal_in_memory_blocks(ws_corpus, split):
    path, tok = ws_corpus
    expected = tokenize_and_group(tok, load_split_texts(str(path), split), 32)
    # Tiny chunks and segments: the stream is cut at hundreds of places inside the document.
    ds = S.StreamingBlocks(lambda: S.pieces(str(path), split), tok, 32, chunk_chars=512, segment_chars=32)
    got = torch.stack(list(ds.blocks()))
    assert got.shape == expected.shape and torch.equal(got, expected)


def test_careless_cuts_would_change_the_tokens(ws_corpus, monkeypatch):
    path, tok = ws_corpus
    expected = tokenize_and_group(tok, load_split_texts(str(path), "train"), 32)
    monkeypatch.setattr(S, "_cut_at", lambda prev, nxt: 0)  # cut at every line boundary
    ds = S.StreamingBlocks(lambda: S.pieces(str(path), "train"), tok, 32, chunk_chars=512, segment_chars=32)
    got = list(ds.blocks())
    assert len(got) != len(expected) or not torch.equal(torch.stack(got), expected)


def test_memory_stays_flat_on_a_corpus_much_larger_than_the_buffer(tmp_path, tiny_assets):
    model_dir, _ = tiny_assets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # Three files: train is the first two whole, 20x the size of the one-file corpus the CLI tests use.
    for i, n in enumerate((6000, 6000, 50, 50)):
        _whitespace_corpus(tmp_path / f"part{i}.txt", n, seed=i)
    spec = str(tmp_path / "part*.txt")
    ds = S.StreamingBlocks(lambda: S.pieces(spec, "train"), tok, 32, chunk_chars=4096, segment_chars=512)
    n_blocks = sum(1 for _ in ds.blocks())
    streamed = n_blocks * 32
    # The buffer: one chunk of text (+ one segment) as tokens, plus < 1 block left over. Never the corpus.
    assert ds.peak_tokens <= 4096 + 8 * 512 + 32
    assert streamed > 40 * ds.peak_tokens, (streamed, ds.peak_tokens)
    assert n_blocks == len(tokenize_and_group(tok, load_split_texts(spec, "train"), 32))


def test_the_stream_repeats_and_eval_is_capped(ws_corpus):
    path, tok = ws_corpus
    ds = S.StreamingBlocks(lambda: S.pieces(str(path), "test"), tok, 32)
    n = sum(1 for _ in ds.blocks())
    it = iter(ds)
    seen = [next(it)["input_ids"] for _ in range(n + 1)]
    assert ds.passes == 1 and torch.equal(seen[n], seen[0])
    full = token_stream(tok, load_split_texts(str(path), "validation"))
    assert torch.equal(S.eval_tokens(str(path), "validation", tok, 100), full[:100])


def _fake_hub(monkeypatch, splits: dict):
    import datasets

    def load_dataset(name, config=None, streaming=False, **kw):
        assert streaming, "the streaming path must not download the dataset"
        return datasets.IterableDatasetDict(
            {k: datasets.Dataset.from_dict({"text": v, "id": list(range(len(v)))}).to_iterable_dataset()
             for k, v in splits.items()})

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


def _docs(pieces):
    docs = []
    for text, starts in pieces:
        if starts:
            docs.append("")
        docs[-1] += text
    return docs


@NEEDS_DATASETS
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_hf_stream_carves_the_same_held_out_rows(monkeypatch, split):
    import datasets

    from pdp_gpt2.data.hub_datasets import rows_to_documents, select_split

    rows = [f"document {i} " * (i % 5) for i in range(1000)]  # some empty: dropped as in memory
    _fake_hub(monkeypatch, {"train": rows})
    expected = rows_to_documents(select_split(datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"text": rows})}), split, "owt"))
    assert _docs(S.pieces("someorg/owt", split)) == expected


@NEEDS_DATASETS
def test_hf_stream_joins_line_per_row_datasets(monkeypatch):
    rows = [" = Title = \n", "", " some text . \n", " more text . \n", ""] * 50
    _fake_hub(monkeypatch, {"train": rows, "validation": rows[:10], "test": rows[:5]})
    assert _docs(S.pieces("wikitext:raw", "test")) == ["".join(rows[:5])]  # one document, as wikitext is read


def _streaming_argv(tiny_assets, out):
    model_dir, corpus = tiny_assets
    return ["train", "--model", str(model_dir), "--dataset", str(corpus), "--output_dir", str(out),
            "--batch_size", "4", "--max_length", "32", "--progress", "false", "--streaming"]


def test_cli_streaming_without_max_steps_is_one_line(tmp_path, tiny_assets, capsys):
    out = tmp_path / "run"
    assert main(_streaming_argv(tiny_assets, out)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--streaming needs --max_steps" in err and not out.exists()


@pytest.mark.slow  # an end-to-end training run (~3 s)
def test_cli_streaming_run(tmp_path, tiny_assets):
    out = tmp_path / "run"
    assert main(_streaming_argv(tiny_assets, out) + ["--max_steps", "4", "--warmup_epochs", "0.5", "--sparsity", "0.5",
                                                      "--streaming_eval_tokens", "300", "--log_interval", "1"]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["train_steps"] == 4 and s["ramp_steps"] == 2 and s["eval_tokens"] == 300
    assert s["sparsity_actual"] == pytest.approx(0.5, abs=1e-3)


@NEEDS_DATASETS
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_hf_in_memory_documents_are_the_streams_joined(monkeypatch, split):
    """One document source: the downloaded dataset and the stream give the same documents, also
    when rows past the first 1000 would have decided "one line per row" differently."""
    import datasets

    rows = [f"line {i}\n" for i in range(1200)] + [f"doc {i}" for i in range(1500)]
    calls = []

    def load_dataset(name, config=None, streaming=False, **kw):
        calls.append(streaming)
        ds = datasets.Dataset.from_dict({"id": list(range(len(rows))), "body": rows})
        return (datasets.IterableDatasetDict({"train": ds.to_iterable_dataset()}) if streaming
                else datasets.DatasetDict({"train": ds}))

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    in_memory = load_split_texts("someorg/owt", split)
    assert in_memory == _docs(S.pieces("someorg/owt", split)) and calls == [False, True]
    if split == "train":  # joined: decided on its first 1000 rows, which are lines (of all: 45 %)
        assert len(in_memory) == 1 and in_memory[0].startswith("line 2\nline 3\n")
    else:  # 14 carved rows, 6 of them lines: each row a document
        assert in_memory == [r for i, r in enumerate(rows) if i % 200 == {"validation": 0, "test": 1}[split]]
