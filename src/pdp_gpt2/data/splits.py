"""Which text goes to which split, and how pieces of text make documents: the rules, in one place.

Every dataset is read as a stream of *pieces* (a line of a file, a row of a HF dataset), each
flagged if it starts a new document. The in-memory path (``sources.load_split_texts``) joins them
into documents and ``--streaming`` tokenizes them as they come, so both see the same splits and
documents by construction. The rules (docs/cli.md lists them for users): the embedded corpus by
whole work; local files whose names say their split, as named (:func:`files_by_name`); three or
more unnamed local files by whole file; one or two files by lines, 90/5/5
(:func:`line_range`); Hugging Face datasets by their own splits, with validation and test carved
out of train by row index where missing (:func:`hf_source`).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pdp_gpt2.errors import UsageError

SPLITS = ("train", "validation", "test")
HELD_OUT_FRACTION = 0.05  # of the lines of one or two local files, per held-out split

ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
CARVE_EVERY = 200
CARVE_SLOT = {"validation": 0, "test": 1}

Piece = tuple[str, bool]  # (text, True if it starts a new document)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")


# Words of a file name that say its split ("wiki.train.txt", "valid-00.txt"); a word, not a part
# of one, so "contest.txt" or "retrain.txt" say nothing.
NAMED = {"train": ("train", "training"), "validation": ("validation", "valid", "val", "dev"),
         "test": ("test", "testing")}


def named_splits(path) -> list[str]:
    """The splits the name of the file ``path`` says (words of its stem), in SPLITS order."""
    words = set(re.findall(r"[a-z]+", Path(path).stem.lower()))
    return [s for s in SPLITS if words & set(NAMED[s])]


def files_by_name(paths: list) -> dict[str, list] | None:
    """{split: files} when the file names say the splits; None when they say none (or only train,
    as every file: the held-out splits are then carved from training text, as a hub dataset's are).
    UsageError when the names say some splits but leave one out, or leave a file unnamed."""
    said = {p: named_splits(p) for p in paths}
    if all(not s or s == ["train"] for s in said.values()) and (all(said.values()) or not any(said.values())):
        return None
    if two := next((p for p, s in said.items() if len(s) > 1), None):
        raise UsageError(f"dataset file {Path(two).name} names two splits ({', '.join(said[two])}); rename it so "
                         "that each file names one of train, valid, test")
    named = ", ".join(f"{Path(p).name}: {s[0]}" for p, s in said.items() if s)
    if none := next((p for p, s in said.items() if not s), None):
        raise UsageError(f"the dataset files name their splits ({named}), but {Path(none).name} names no split; "
                         "name every file train, valid or test, or none of them")
    out = {split: [p for p in paths if said[p] == [split]] for split in SPLITS}
    if missing := next((split for split in SPLITS if not out[split]), None):
        raise UsageError(f"the dataset files name their splits ({named}), but none is named for {missing}; "
                         f"add a file named {NAMED[missing][0]}*.txt")
    return out


def files_of_split(paths: list, split: str) -> list:
    """The whole files of ``split``: as their names say (:func:`files_by_name`), else by sorted order
    (three or more files)."""
    named = files_by_name(paths)
    if named is not None:
        return named[split]
    return {"train": paths[:-2], "validation": paths[-2:-1], "test": paths[-1:]}[split]


def line_range(n_lines: int, split: str) -> tuple[int, int]:
    """[lo, hi) of the lines of ``split`` in a file of ``n_lines`` lines (90 % / 5 % / 5 %)."""
    a = round(n_lines * (1 - 2 * HELD_OUT_FRACTION))
    b = round(n_lines * (1 - HELD_OUT_FRACTION))
    return {"train": (0, a), "validation": (a, b), "test": (b, n_lines)}[split]


def hf_source(available: Iterable[str], split: str, spec: str) -> tuple[str, Callable[[int], bool]]:
    """(split of the dataset to read, which row indices of it to keep) for ``split``."""
    available = list(available)
    carved = [s for s in ("validation", "test") if not any(a in available for a in ALIASES[s])]
    if split != "train" and split not in carved:
        return next(a for a in ALIASES[split] if a in available), lambda i: True
    if "train" not in available:
        raise UsageError(f"dataset {spec!r} has no {split!r} or 'train' split (has: {', '.join(available)})")
    if split == "train":
        drop = {CARVE_SLOT[s] for s in carved}
        return "train", lambda i: i % CARVE_EVERY not in drop
    return "train", lambda i: i % CARVE_EVERY == CARVE_SLOT[split]


def doc_lines(lines: Iterable[str]) -> Iterator[Piece]:
    """The lines of one document as pieces (the first one starts it)."""
    first = True
    for line in lines:
        yield line, first
        first = False


def documents(pieces: Iterable[Piece]) -> list[str]:
    """Pieces joined back into documents."""
    docs: list[list[str]] = []
    for text, starts in pieces:
        if starts or not docs:
            docs.append([])
        docs[-1].append(text)
    return ["".join(d) for d in docs]
