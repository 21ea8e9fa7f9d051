"""Which text goes to which split, and how pieces of text make documents: the rules, in one place.

Every dataset is read as a stream of *pieces* (a line of a file, a row of a HF dataset), each
flagged if it starts a new document. The in-memory path (``sources.load_split_texts``) joins them
into documents and ``--streaming`` tokenizes them as they come, so both see the same splits and
documents by construction. The rules (docs/cli.md lists them for users): the embedded corpus by
whole work; three or more local files by whole file; one or two files by lines, 90/5/5
(:func:`line_range`); Hugging Face datasets by their own splits, with validation and test carved
out of train by row index where missing (:func:`hf_source`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

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


def files_of_split(paths: list, split: str) -> list:
    """With three or more (sorted) files, the whole files of ``split``."""
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
