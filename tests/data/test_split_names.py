"""Local files whose names say their split are used as named (sorted order put test.txt in train),
and a dataset path that is a directory says so and what to pass."""
from __future__ import annotations

import pytest

from pdp_gpt2.data.sources import load_split_texts
from pdp_gpt2.errors import UsageError


def _files(root, *names):
    for name in names:
        (root / name).write_text(f"text of {name}\n")
    return f"{root}/*.txt"


def test_files_named_train_valid_test_are_used_as_named(tmp_path):
    spec = _files(tmp_path, "train.txt", "valid.txt", "test.txt")  # sorted: test, train, valid
    assert load_split_texts(spec, "train") == ["text of train.txt\n"]
    assert load_split_texts(spec, "validation") == ["text of valid.txt\n"]
    assert load_split_texts(spec, "test") == ["text of test.txt\n"]


def test_split_words_anywhere_in_the_name_count(tmp_path):
    spec = _files(tmp_path, "wiki.test.txt", "wiki.train.01.txt", "wiki.train.02.txt", "wiki_dev.txt")
    assert load_split_texts(spec, "train") == ["text of wiki.train.01.txt\n", "text of wiki.train.02.txt\n"]
    assert load_split_texts(spec, "validation") == ["text of wiki_dev.txt\n"]
    assert load_split_texts(spec, "test") == ["text of wiki.test.txt\n"]


def test_names_that_say_nothing_keep_the_sorted_rule(tmp_path):
    spec = _files(tmp_path, "contest.txt", "latest.txt", "retrain.txt")  # split words inside other words
    assert load_split_texts(spec, "test") == ["text of retrain.txt\n"]


def test_files_all_named_train_keep_the_line_rule(tmp_path):
    f = tmp_path / "train.txt"
    f.write_text("".join(f"line {i}\n" for i in range(100)))
    assert load_split_texts(str(f), "test")[0].startswith("line 95\n")


@pytest.mark.parametrize("names, needle", [
    (("train.txt", "test.txt", "notes.txt"), "notes.txt names no split"),
    (("train.txt", "test.txt", "more.train.txt"), "none is named for validation"),
    (("train.txt", "valid.txt"), "none is named for test"),
    (("test.txt",), "none is named for train"),
    (("train.txt", "valid.txt", "train_test.txt"), "train_test.txt names two splits"),
])
def test_names_that_say_some_splits_but_not_all_are_refused(tmp_path, names, needle):
    spec = _files(tmp_path, *names)
    for split in ("train", "validation", "test"):
        with pytest.raises(UsageError, match=needle):
            load_split_texts(spec, split)


def test_a_directory_says_it_is_one_and_what_to_pass(tmp_path):
    (tmp_path / "adir").mkdir()
    with pytest.raises(UsageError) as e:
        load_split_texts(str(tmp_path / "adir"), "train")
    msg = str(e.value)
    assert "is a directory" in msg and f"'{tmp_path / 'adir'}/*.txt'" in msg and "not found" not in msg


def test_cli_refuses_misnamed_files_in_one_line_before_any_work(tiny_assets, tmp_path, capsys):
    from pdp_gpt2.cli import main

    model_dir, _ = tiny_assets
    spec = _files(tmp_path, "train.txt", "test.txt", "notes.txt")
    out = tmp_path / "out"
    rc = main(["train", "--model", str(model_dir), "--dataset", spec, "--output_dir", str(out), "--max_steps", "2",
               "--max_length", "32", "--progress", "false"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "notes.txt names no split" in err, err
    assert not out.exists() or not any(out.iterdir())
