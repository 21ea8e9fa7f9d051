"""``--streaming``: the train split as an endless stream of fixed-length blocks.

Nothing is held whole: text is read a line (local files) or a row (HF datasets,
``load_dataset(..., streaming=True)``) at a time, tokenized about ``chunk_chars``
characters at a time, and cut into blocks; at most one chunk's tokens plus less than
one block of leftover are in memory (``StreamingBlocks.peak_tokens`` counts them).

The splits and the token stream are the non-streaming ones (data.py, hf_datasets.py):
documents joined by EOS, the same held-out lines/files/rows.  So on GPT-2's byte-level
BPE the blocks are exactly ``data.tokenize_and_group`` of the same split (tested),
which needs care where a long document is cut: see ``_cut_at``.

The held-out split is streamed too and capped at ``--streaming_eval_tokens``.
The stream restarts when it ends (so ``--max_steps`` decides the length) and never
shuffles, so a resumed run, which skips the batches already seen, sees the same data.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import IterableDataset

from pdp_gpt2.data.sources import (DEFAULT_DATASET, HELD_OUT_FRACTION, _encode_batch, _expand_paths, _looks_local,
                           load_embedded)
from pdp_gpt2.errors import UsageError

CHUNK_CHARS = 1 << 20  # characters tokenized per call (the Rust tokenizer encodes a batch in parallel)
SEGMENT_CHARS = 1 << 16  # a long document is cut into segments of about this size, at safe cuts only
JOIN_PEEK_ROWS = 1000  # rows looked at to decide "one line per row" (see hf_datasets.rows_to_documents)

Piece = tuple[str, bool]  # (text, True if it starts a new document)


# ---- where the text comes from --------------------------------------------------------
def pieces(spec: str, split: str) -> Iterator[Piece]:
    """The documents of ``split`` as pieces (lines or rows), in the non-streaming path's order."""
    spec = spec.strip()
    if spec == DEFAULT_DATASET:
        for doc in load_embedded(split):  # small: bundled with the package
            yield from _doc_lines(doc.splitlines(keepends=True))
    elif _looks_local(spec):
        yield from _local_pieces(_expand_paths(spec), split)
    else:
        yield from _hf_pieces(spec, split)


def _doc_lines(lines) -> Iterator[Piece]:
    first = True
    for line in lines:
        yield line, first
        first = False


def _lines(path: Path) -> Iterator[str]:
    """Lines as ``str.splitlines(keepends=True)`` of the whole (newline-translated) text gives them."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:  # splits on \n only; splitlines() also cuts at \v, \f, \u2028, ...
                yield from line.splitlines(keepends=True)
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason})") from None


def _local_pieces(paths: list[Path], split: str) -> Iterator[Piece]:
    if len(paths) >= 3:  # whole files: ..., validation, test (data._local_split)
        chosen = {"train": paths[:-2], "validation": paths[-2:-1], "test": paths[-1:]}[split]
        for p in chosen:
            yield from _doc_lines(_lines(p))
        return
    for p in paths:  # each file cut by lines at 90 % / 95 % (data.split_lines): count first, then read
        st = p.stat()
        n = _count_lines(p, st.st_size, st.st_mtime_ns)
        a, b = round(n * (1 - 2 * HELD_OUT_FRACTION)), round(n * (1 - HELD_OUT_FRACTION))
        lo, hi = {"train": (0, a), "validation": (a, b), "test": (b, n)}[split]
        yield from _doc_lines(islice(_lines(p), lo, hi))


@functools.lru_cache(maxsize=64)
def _count_lines(path: Path, size: int, mtime_ns: int) -> int:
    """Lines in a file (size and mtime in the key: an edited file is counted again), once per process."""
    return sum(1 for _ in _lines(path))


def _hf_pieces(spec: str, split: str) -> Iterator[Piece]:
    import datasets

    from pdp_gpt2.data.hub_datasets import ALIASES, CARVE_EVERY, CARVE_SLOT, parse_spec
    from pdp_gpt2.data.hub import offline_unless_reachable

    name, config = parse_spec(spec)
    try:
        with offline_unless_reachable():
            dsd = datasets.load_dataset(name, config, streaming=True)
    except Exception as e:  # noqa: BLE001 - not-found/offline errors vary by datasets version
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UsageError(f"cannot stream dataset {spec!r}: {why}") from None
    carved = [s for s in ("validation", "test") if not any(a in dsd for a in ALIASES[s])]
    if split == "train" or split in carved:  # held-out rows carved out of train by index, as hf_datasets does
        if "train" not in dsd:
            raise UsageError(f"dataset {spec!r} has no {split!r} or 'train' split (has: {', '.join(dsd)})")
        keep = ((lambda i: i % CARVE_EVERY not in {CARVE_SLOT[s] for s in carved}) if split == "train"
                else (lambda i: i % CARVE_EVERY == CARVE_SLOT[split]))
        source = dsd["train"]
    else:
        source, keep = dsd[next(a for a in ALIASES[split] if a in dsd)], (lambda i: True)
    rows = (r for i, r in enumerate(_texts(source, spec)) if keep(i))
    yield from _rows_to_pieces(rows)


def _texts(ds, spec: str) -> Iterator[str | None]:
    column = None
    for row in ds:
        if column is None:
            column = "text" if "text" in row else next((k for k, v in row.items() if isinstance(v, str)), None)
            if column is None:
                raise UsageError(f"dataset {spec!r} has no text column (columns: {', '.join(row)})")
        yield row[column]


def _rows_to_pieces(rows: Iterator[str | None]) -> Iterator[Piece]:
    """hf_datasets.rows_to_documents as a stream, deciding "one line per row" on the first rows."""
    rows = (r for r in rows if r is not None)
    head = list(islice(rows, JOIN_PEEK_ROWS))
    nonempty = [r for r in head if r.strip()]
    joined = bool(nonempty) and sum(r.endswith("\n") for r in nonempty) >= 0.9 * len(nonempty)
    everything = (r for part in (head, rows) for r in part)
    if joined:  # wikitext: rows are lines of one document
        yield from _doc_lines(everything)
    else:
        yield from ((r, True) for r in everything if r.strip())


# ---- text -> tokens -> blocks ----------------------------------------------------------
def _cut_at(prev: str, nxt: str) -> int | None:
    """Where to cut between pieces prev and nxt so both halves tokenize as the whole does, or None.

    GPT-2's byte-level pre-tokenizer splits a whitespace run just before its last
    character (which stands alone, or joins the next word if it is a space).  A cut at
    exactly that point leaves every pre-token, hence every BPE token, unchanged.  For
    lines, prev ends in "\n", so the run spans the boundary: the cut is inside nxt
    (offset >= 0: nxt[:offset] stays behind) or, when nxt starts with a word, before
    prev's last character (-1).  None if nxt is all whitespace (the run goes on).
    """
    if not prev or not prev[-1].isspace():
        return None
    k = next((i for i, c in enumerate(nxt) if not c.isspace()), None)
    return None if k is None else k - 1


def token_chunks(tokenizer, source: Iterator[Piece], chunk_chars: int = CHUNK_CHARS,
                 segment_chars: int = SEGMENT_CHARS) -> Iterator[list[int]]:
    """``data.token_stream`` of the documents in ``source``, a chunk of token ids at a time."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UsageError("the tokenizer has no EOS token to separate documents")
    segments: list[tuple[list[str], bool]] = []  # (parts, starts a document); tokenized one batch at a time
    seg_len = batch_len = 0
    first_doc = True

    def encode(done: list[tuple[list[str], bool]]) -> list[int]:
        nonlocal first_doc
        out: list[int] = []
        for (_, starts), ids in zip(done, _encode_batch(tokenizer, ["".join(p) for p, _ in done])):
            if starts and not first_doc:
                out.append(eos)
            first_doc = first_doc and not starts
            out.extend(ids)
        return out

    for text, starts in source:
        new_segment = starts or not segments
        if not new_segment and seg_len >= segment_chars:
            parts = segments[-1][0]
            at = _cut_at(parts[-1], text)
            if at is not None:
                if at < 0:
                    parts[-1], text = parts[-1][:-1], parts[-1][-1] + text
                else:
                    parts.append(text[:at])
                    text = text[at:]
                new_segment = True
            elif seg_len >= 8 * segment_chars:
                new_segment = True  # pages of whitespace: accept a possible token difference at this cut
        if new_segment:
            if batch_len >= chunk_chars:  # only whole segments are tokenized
                yield encode(segments)
                segments, batch_len = [], 0
            segments.append(([], starts))
            seg_len = 0
        segments[-1][0].append(text)
        seg_len, batch_len = seg_len + len(text), batch_len + len(text)
    if segments:
        yield encode(segments)


class StreamingBlocks(IterableDataset):
    """Endless causal-LM examples ``{"input_ids", "labels"}`` of ``block_size`` tokens from ``open_source()``."""

    def __init__(self, open_source: Callable[[], Iterator[Piece]], tokenizer, block_size: int,
                 chunk_chars: int = CHUNK_CHARS, segment_chars: int = SEGMENT_CHARS):
        self.open_source, self.tokenizer, self.block_size = open_source, tokenizer, block_size
        self.chunk_chars, self.segment_chars = chunk_chars, segment_chars
        self.peak_tokens = 0  # most token ids held at once (the test's measure of "memory stays flat")
        self.passes = 0

    def blocks(self) -> Iterator[torch.Tensor]:
        """One pass over the source: blocks of consecutive tokens, the remainder dropped."""
        buf: list[int] = []
        for ids in token_chunks(self.tokenizer, self.open_source(), self.chunk_chars, self.segment_chars):
            buf.extend(ids)
            self.peak_tokens = max(self.peak_tokens, len(buf))
            n = len(buf) // self.block_size * self.block_size
            for i in range(0, n, self.block_size):
                yield torch.tensor(buf[i:i + self.block_size], dtype=torch.long)
            del buf[:n]

    def __iter__(self):
        while True:
            empty = True
            for block in self.blocks():
                empty = False
                yield {"input_ids": block, "labels": block}
            if empty:
                raise UsageError(f"the stream has fewer than {self.block_size} tokens")
            self.passes += 1


def eval_tokens(spec: str, split: str, tokenizer, max_tokens: int, chunk_chars: int = CHUNK_CHARS) -> torch.Tensor:
    """The first ``max_tokens`` of ``data.token_stream`` of the held-out split, read as a stream."""
    out: list[int] = []
    for ids in token_chunks(tokenizer, pieces(spec, split), chunk_chars):
        out.extend(ids[: max_tokens - len(out)])
        if len(out) >= max_tokens:
            break
    return torch.tensor(out, dtype=torch.long)


def open_stream(cfg, tokenizer) -> tuple[StreamingBlocks, torch.Tensor]:
    """(train blocks, eval tokens) for ``--streaming``; fails here, before training, on an empty stream."""
    train = StreamingBlocks(lambda: pieces(cfg.dataset, "train"), tokenizer, cfg.max_length)
    peek = train.blocks()
    empty = next(peek, None) is None
    peek.close()  # closes the file or HF stream it opened
    if empty:
        raise UsageError(f"dataset {cfg.dataset!r} has fewer than {cfg.max_length} training tokens")
    train.peak_tokens = 0
    return train, eval_tokens(cfg.dataset, cfg.eval_split, tokenizer, cfg.streaming_eval_tokens)
