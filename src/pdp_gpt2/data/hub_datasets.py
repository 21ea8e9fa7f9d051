"""Hugging Face datasets as lists of documents (used by ``data.load_split_texts``).

Spec ``"name"`` or ``"name:config"``.  Split names: ``validation`` also
accepts ``valid``/``dev``.  When a dataset lacks a validation or test split
(``openwebtext`` has only ``train``), one is carved from ``train``
deterministically: row ``i`` goes to validation if ``i % 200 == 0`` and to test
if ``i % 200 == 1`` (0.5 % each, spread over the whole set), the rest stay in
train.  No remote code runs: datasets >= 4 loads only data files, never
loading scripts.
"""
from __future__ import annotations

from pdp_gpt2.errors import UsageError
from pdp_gpt2.data.hub import offline_unless_reachable

ALIASES = {"train": ("train",), "validation": ("validation", "valid", "dev"), "test": ("test",)}
CARVE_EVERY = 200
CARVE_SLOT = {"validation": 0, "test": 1}


def parse_spec(spec: str) -> tuple[str, str | None]:
    name, _, config = spec.partition(":")
    if not name.strip():
        raise UsageError(f"bad dataset spec {spec!r}; expected NAME or NAME:CONFIG")
    return name.strip(), config.strip() or None


def load_hf_split(spec: str, split: str) -> list[str]:
    import datasets

    name, config = parse_spec(spec)
    try:
        with offline_unless_reachable():
            dsd = datasets.load_dataset(name, config)
    except ValueError as e:  # e.g. a config that does not exist
        raise UsageError(f"dataset {spec!r}: {str(e).splitlines()[0]}") from None
    except Exception as e:  # noqa: BLE001 - connection, not-found and offline errors vary by version
        if type(e).__name__ == "DatasetNotFoundError":
            raise UsageError(f"dataset {name!r} not found on the Hugging Face hub or in the local cache") from None
        raise UsageError(
            f"cannot reach the Hugging Face hub for dataset {spec!r}; pass local .txt files instead"
        ) from None
    rows = select_split(dsd, split, spec)
    return rows_to_documents(rows)


def select_split(dsd, split: str, spec: str) -> list[str]:
    """Rows (strings) of ``split``, carving held-out splits out of ``train`` when the dataset lacks them."""
    carved = [s for s in ("validation", "test") if not any(a in dsd for a in ALIASES[s])]
    if split in carved or split == "train":
        if "train" not in dsd:
            raise UsageError(f"dataset {spec!r} has no {split!r} or 'train' split (has: {', '.join(dsd)})")
        rows = list(dsd["train"][text_column(dsd["train"], spec)])
        if split == "train":
            drop = {CARVE_SLOT[s] for s in carved}
            return [r for i, r in enumerate(rows) if i % CARVE_EVERY not in drop]
        return [r for i, r in enumerate(rows) if i % CARVE_EVERY == CARVE_SLOT[split]]
    name = next(a for a in ALIASES[split] if a in dsd)
    return list(dsd[name][text_column(dsd[name], spec)])


def text_column(ds, spec: str) -> str:
    """``text`` if present, else the first string column."""
    if "text" in ds.column_names:
        return "text"
    for name, feature in ds.features.items():
        if getattr(feature, "dtype", None) in ("string", "large_string"):
            return name
    raise UsageError(f"dataset {spec!r} has no text column (columns: {', '.join(ds.column_names)})")


def rows_to_documents(rows: list[str]) -> list[str]:
    """Rows → documents.

    Datasets that store one *line* per row (wikitext: rows end in ``\\n`` and
    blank lines are rows) are joined back into a single document, as in the
    transformers perplexity guide; otherwise each non-empty row is a document
    and gets its own EOS separator.
    """
    rows = [r for r in rows if r is not None]
    nonempty = [r for r in rows if r.strip()]
    if nonempty and sum(r.endswith("\n") for r in nonempty) >= 0.9 * len(nonempty):
        return ["".join(rows)]
    return nonempty
