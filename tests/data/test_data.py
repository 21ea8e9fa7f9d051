"""data.py: embedded corpus split, local-file splits and errors, blocks without padding."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from pdp_gpt2.data import sources as data
from pdp_gpt2.data.sources import LMBlockDataset, load_split_texts, token_stream, tokenize_and_group
from pdp_gpt2.errors import UsageError
from pdp_gpt2.train.pretrain import train_tokenizer

from helpers import NEEDS_DATASETS, ROOT

TEXT = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
        "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n")


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer([TEXT * 3], vocab_size=300)


# --- token streams and blocks -------------------------------------------------------------

def test_token_stream_joins_documents_with_one_eos_each(tok):
    docs = [TEXT, "Thou art more lovely.", "May"]
    stream = token_stream(tok, docs)
    parts = [tok(d, add_special_tokens=False)["input_ids"] for d in docs]
    expected = parts[0] + [tok.eos_token_id] + parts[1] + [tok.eos_token_id] + parts[2]
    assert stream.tolist() == expected
    assert int((stream == tok.eos_token_id).sum()) == 2  # separators only, none at the ends


def test_tokenize_and_group_cuts_full_blocks_and_drops_the_remainder(tok):
    docs = [TEXT, TEXT.upper(), "short"]
    stream = token_stream(tok, docs)
    blocks = tokenize_and_group(tok, docs, block_size=16)
    assert blocks.dtype == torch.long
    assert blocks.shape == (len(stream) // 16, 16)
    assert torch.equal(blocks.flatten(), stream[: blocks.numel()])  # nothing inserted, no padding
    assert len(stream) - blocks.numel() < 16
    assert int((blocks == tok.eos_token_id).sum()) <= len(docs) - 1


def test_tokenize_and_group_rejects_text_shorter_than_a_block(tok):
    with pytest.raises(UsageError, match="fewer than one block of 4096"):
        tokenize_and_group(tok, ["tiny"], block_size=4096)


def test_block_dataset_labels_are_the_inputs():
    blocks = torch.arange(12).view(3, 4)
    ds = LMBlockDataset(blocks)
    assert len(ds) == 3
    item = ds[1]
    assert item["input_ids"].tolist() == [4, 5, 6, 7]
    assert item["labels"].tolist() == [4, 5, 6, 7]


# --- embedded corpus -------------------------------------------------------------------------

def test_embedded_split_is_by_whole_work():
    titles = {s: data.embedded_titles(s) for s in data.SPLITS}
    assert set(titles["validation"]) == {"Macbeth", "Twelfth Night", "Julius Caesar"}
    assert set(titles["test"]) == {"Hamlet", "The Tempest", "A Midsummer Night's Dream"}
    all_titles = [t for s in data.SPLITS for t in titles[s]]
    assert len(all_titles) == len(set(all_titles)) == 42  # one edition per work, no work in two splits


def test_embedded_held_out_shares_and_no_boilerplate():
    sizes = {s: sum(map(len, load_split_texts("shakespeare", s))) for s in data.SPLITS}
    total = sum(sizes.values())
    assert 0.05 <= sizes["validation"] / total <= 0.08
    assert 0.05 <= sizes["test"] / total <= 0.08
    for text in load_split_texts("shakespeare", "train"):
        assert "Project Gutenberg" not in text and "\n\n\n" not in text


def test_gutenberg_stripping():
    spec = importlib.util.spec_from_file_location("build_corpus", ROOT / "scripts" / "build_corpus.py")
    build_corpus = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_corpus)
    raw = ("The Project Gutenberg EBook of Hamlet\nlicence blah\n"
           "*** START OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nWho's there?\n"
           "*** END OF THIS PROJECT GUTENBERG EBOOK HAMLET ***\nmore licence\n")
    assert build_corpus.strip_gutenberg(raw).strip() == "Who's there?"
    assert build_corpus.normalize("a  \r\n\r\n\r\n\r\nb\n") == "a\n\nb\n"


# --- local files -----------------------------------------------------------------------------

def test_one_local_file_is_cut_by_lines_90_5_5(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    train, = load_split_texts(str(f), "train")
    val, = load_split_texts(str(f), "validation")
    test, = load_split_texts(str(f), "test")
    assert train.count("\n") == 90 and val.count("\n") == 5 and test.count("\n") == 5
    assert val.startswith("line 90\n") and test.endswith("line 99\n")


def test_three_local_files_split_by_whole_file_in_sorted_order(tmp_path):
    for name in ("c.txt", "a.txt", "b.txt", "d.txt"):
        (tmp_path / name).write_text(f"text of {name}\n")
    spec = f"{tmp_path}/*.txt"
    assert load_split_texts(spec, "train") == ["text of a.txt\n", "text of b.txt\n"]
    assert load_split_texts(spec, "validation") == ["text of c.txt\n"]
    assert load_split_texts(spec, "test") == ["text of d.txt\n"]
    # comma-separated paths are the same files, deduplicated
    listed = ",".join(str(tmp_path / n) for n in ("d.txt", "a.txt", "b.txt", "c.txt", "a.txt"))
    assert load_split_texts(listed, "test") == ["text of d.txt\n"]


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.txt"), "dataset file not found: .*missing.txt"),
    (lambda d: str(d / "*.nothing"), "glob .* matches no files"),
    (lambda d: (d / "empty.txt").write_text("  \n\n") and str(d / "empty.txt"), "dataset file is empty: .*empty.txt"),
])
def test_bad_local_files_are_usage_errors(tmp_path, make, message):
    with pytest.raises(UsageError, match=message):
        load_split_texts(make(tmp_path), "train")


def test_unknown_split_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown split 'dev'"):
        load_split_texts("shakespeare", "dev")


# --- Hugging Face datasets (offline: only the split logic and the error) ---------------------

def test_hf_dataset_without_held_out_splits_is_carved_deterministically():
    datasets = pytest.importorskip("datasets")
    from pdp_gpt2.data.hub_datasets import select_split

    rows = [f"doc {i}" for i in range(400)]
    dsd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": list(range(400)), "body": rows})})
    assert select_split(dsd, "validation", "x") == ["doc 0", "doc 200"]
    assert select_split(dsd, "test", "x") == ["doc 1", "doc 201"]
    train = select_split(dsd, "train", "x")
    assert len(train) == 396 and "doc 0" not in train and "doc 2" in train


def test_hf_line_per_row_datasets_become_one_document():
    from pdp_gpt2.data.hub_datasets import rows_to_documents

    wikitext_like = ["", " = Title = \n", "", " Some text .\n", " More .\n"]
    assert rows_to_documents(wikitext_like) == [" = Title = \n Some text .\n More .\n"]
    assert rows_to_documents(["doc one", "", "doc two"]) == ["doc one", "doc two"]


@NEEDS_DATASETS
@pytest.mark.parametrize("spec", ["no-such-dataset-x1", "some-org/no-such-dataset:cfg"])
def test_unreachable_hub_dataset_is_a_usage_error(monkeypatch, spec):
    from pdp_gpt2.data import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.hub_reachable.cache_clear()
    try:
        with pytest.raises(UsageError, match=f"cannot reach the Hugging Face hub for dataset '{spec}'"):
            load_split_texts(spec, "test")
    finally:
        hub.hub_reachable.cache_clear()


# --- the split rules (splits.py), by hand ---------------------------------------------------

def test_split_rules_by_hand():
    from pdp_gpt2.data.splits import documents, files_of_split, hf_source, line_range

    assert [line_range(100, s) for s in data.SPLITS] == [(0, 90), (90, 95), (95, 100)]
    assert [line_range(7, s) for s in data.SPLITS] == [(0, 6), (6, 7), (7, 7)]  # round(6.3), round(6.65)
    assert [files_of_split(list("abcd"), s) for s in data.SPLITS] == [["a", "b"], ["c"], ["d"]]
    name, keep = hf_source(["train"], "validation", "x")
    assert name == "train" and [i for i in range(450) if keep(i)] == [0, 200, 400]
    name, keep = hf_source(["train", "dev"], "train", "x")  # only test is carved
    assert name == "train" and [i for i in range(5) if not keep(i)] == [1]
    assert hf_source(["train", "dev"], "validation", "x")[0] == "dev"
    with pytest.raises(UsageError, match="has no 'test' or 'train' split"):
        hf_source(["validation"], "test", "x")
    assert documents([("a\n", True), ("b\n", False), ("c", True)]) == ["a\nb\n", "c"]


def test_not_utf8_names_the_byte(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes("ok\nnaïve\n".encode() + b"x\xffy\n")
    with pytest.raises(UsageError, match=r"bad.txt is not UTF-8 text \(invalid start byte at byte 11\)"):
        load_split_texts(str(f), "train")


def test_an_empty_file_among_three_is_an_error_for_its_split_only(tmp_path):
    for name, text in (("a.txt", "one\n"), ("b.txt", "two\n"), ("c.txt", " \n\n"), ("d.txt", "four\n")):
        (tmp_path / name).write_text(text)
    spec = f"{tmp_path}/*.txt"
    assert load_split_texts(spec, "test") == ["four\n"]
    with pytest.raises(UsageError, match="dataset file is empty: .*c.txt"):
        load_split_texts(spec, "validation")


def test_local_documents_keep_every_line_ending(tmp_path):
    f = tmp_path / "a.txt"
    f.write_bytes(b"a\r\nb\rc\n\x0cd\n" * 10)  # \r\n and \r read as \n (universal newlines), \f kept in a line
    text = f.read_text()
    got = "".join(load_split_texts(str(f), s)[0] for s in data.SPLITS)
    assert got == text


# --- one split scored (data/perplexity.evaluate_split, what `pdp-gpt2 eval` calls) ----------------

def test_window_and_stride_defaults_and_errors():
    from pdp_gpt2.data.perplexity import window_and_stride

    assert window_and_stride(0, 0, 64) == (64, 32)
    assert window_and_stride(16, 0, 64) == (16, 8) and window_and_stride(3, 0, None) == (3, 1)
    for args, message in (((65, 0, 64), "--max_length 65 exceeds the model's context of 64 tokens"),
                          ((0, 0, None), "the model config has no context length"),
                          ((16, 17, 64), "--stride 17 exceeds the window of 16 tokens"),
                          ((-1, 0, 64), "must be positive")):
        with pytest.raises(UsageError, match=message):
            window_and_stride(*args)


def test_evaluate_split_is_the_sliding_window_perplexity_of_the_split(tmp_path, tok):
    from helpers import tiny_gpt2, tiny_llama
    from pdp_gpt2.data.perplexity import context_length, evaluate_split, perplexity, pick_device

    f = tmp_path / "a.txt"
    f.write_text(TEXT * 40)
    model = tiny_gpt2(vocab=len(tok), n_positions=32)
    got = evaluate_split(model, tok, str(f), "test", progress=False)
    ids = token_stream(tok, load_split_texts(str(f), "test"))
    want = perplexity(model, ids, window=32, stride=16, progress=False)
    assert got == {**want, "dataset": str(f), "split": "test", "window": 32, "stride": 16}
    assert context_length(tiny_llama().config) == 64 and pick_device("cpu") == torch.device("cpu")
    with pytest.raises(UsageError, match="--batch_size must be positive"):
        evaluate_split(model, tok, str(f), "test", batch_size=0)
