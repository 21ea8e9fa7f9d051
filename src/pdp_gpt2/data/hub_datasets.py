"""Hugging Face datasets as pieces of documents (``sources.pieces`` for a hub spec).

Spec ``"name"`` or ``"name:config"``.  The split rules (aliases, the rows carved out of
``train`` when a dataset has no validation or test) are in splits.py.  The same code reads
a downloaded dataset (in memory) and ``load_dataset(..., streaming=True)`` (``--streaming``),
so both see the same rows.  No remote code runs: datasets >= 4 loads only data files,
never loading scripts.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from pdp_gpt2.data.hub import offline_unless_reachable
from pdp_gpt2.data.splits import Piece, doc_lines, documents, hf_source
from pdp_gpt2.errors import UsageError

JOIN_PEEK_ROWS = 1000  # rows looked at to decide "one line per row" (see rows_to_pieces)


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, config = spec.partition(":")
    if not name.strip():
        raise UsageError(f"bad dataset spec {spec!r}; expected NAME or NAME:CONFIG")
    return name.strip(), config.strip() or None


def open_dataset(spec: str, streaming: bool):
    """The DatasetDict (or IterableDatasetDict) of a spec; every failure is one UsageError line."""
    import datasets

    name, config = parse_spec(spec)
    try:
        with offline_unless_reachable():
            return datasets.load_dataset(name, config, streaming=streaming)
    except Exception as e:  # noqa: BLE001 - not-found/offline errors vary by datasets version
        if streaming:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UsageError(f"cannot stream dataset {spec!r}: {why}") from None
        if isinstance(e, ValueError):  # e.g. a config that does not exist
            raise UsageError(f"dataset {spec!r}: {str(e).splitlines()[0]}") from None
        if type(e).__name__ == "DatasetNotFoundError":
            raise UsageError(f"dataset {name!r} not found on the Hugging Face hub or in the local cache") from None
        raise UsageError(
            f"cannot reach the Hugging Face hub for dataset {spec!r}; pass local .txt files instead"
        ) from None


def hf_pieces(spec: str, split: str, streaming: bool = False) -> Iterator[Piece]:
    """The documents of ``split`` of a hub dataset, as pieces."""
    yield from rows_to_pieces(split_rows(open_dataset(spec, streaming), split, spec))


def split_rows(dsd, split: str, spec: str) -> Iterator[str | None]:
    """The text of every row of ``split`` (carved out of ``train`` if the dataset lacks it)."""
    source, keep = hf_source(list(dsd), split, spec)
    return (r for i, r in enumerate(texts(dsd[source], spec)) if keep(i))


def select_split(dsd, split: str, spec: str) -> list[str]:
    """:func:`split_rows` as a list."""
    return list(split_rows(dsd, split, spec))


def texts(ds, spec: str) -> Iterator[str | None]:
    """The text column of a Dataset or IterableDataset: ``text`` if present, else the first string column."""
    import datasets

    features = getattr(ds, "features", None)
    if features:
        column = text_column(features, spec)
        if isinstance(ds, datasets.Dataset):  # in memory: one column, read at once
            yield from ds[column]
            return
        for row in ds:
            yield row[column]
        return
    column = None  # a stream without a schema: decided on the first row
    for row in ds:
        if column is None:
            column = "text" if "text" in row else next((k for k, v in row.items() if isinstance(v, str)), None)
            if column is None:
                raise UsageError(f"dataset {spec!r} has no text column (columns: {', '.join(row)})")
        yield row[column]


def text_column(features, spec: str) -> str:
    if "text" in features:
        return "text"
    for name, feature in features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return name
    raise UsageError(f"dataset {spec!r} has no text column (columns: {', '.join(features)})")


def rows_to_pieces(rows: Iterable[str | None]) -> Iterator[Piece]:
    """Rows → documents, as pieces.

    Datasets that store one *line* per row (wikitext: rows end in ``\\n`` and blank lines
    are rows) are joined back into a single document, as in the transformers perplexity
    guide; otherwise each non-empty row is a document and gets its own EOS separator.
    Which of the two is decided on the first JOIN_PEEK_ROWS rows, so a stream can decide
    before it has read the rest.
    """
    rows = (r for r in rows if r is not None)
    head = list(islice(rows, JOIN_PEEK_ROWS))
    nonempty = [r for r in head if r.strip()]
    joined = bool(nonempty) and sum(r.endswith("\n") for r in nonempty) >= 0.9 * len(nonempty)
    everything = (r for part in (head, rows) for r in part)
    if joined:
        yield from doc_lines(everything)
    else:
        yield from ((r, True) for r in everything if r.strip())


def rows_to_documents(rows: Iterable[str | None]) -> list[str]:
    """:func:`rows_to_pieces`, joined."""
    return documents(rows_to_pieces(rows))
