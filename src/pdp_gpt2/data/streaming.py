"""``--streaming``: the train split as an endless stream of fixed-length blocks.

The pieces of ``sources.pieces`` (a local file's lines read in bounded parts) are tokenized about
``chunk_chars`` characters at a time, in segments of about ``segment_chars`` however long a line is,
and cut into blocks: at most one chunk's tokens and less than a block of leftover are in memory
(``StreamingBlocks.peak_tokens``). They are the pieces the in-memory path joins into documents, and
the token stream is ``sources.token_stream``'s, so on GPT-2's BPE the blocks are exactly
``sources.tokenize_and_group``'s (tested; where a long document is cut, see ``_cut_at``). The
held-out split is capped at ``--streaming_eval_tokens``. The stream restarts when it ends and never
shuffles, so a resumed run, which skips the batches already seen, sees the same data.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import IterableDataset

from pdp_gpt2.data import sources
from pdp_gpt2.data.sources import encode_batch
from pdp_gpt2.data.splits import Piece
from pdp_gpt2.errors import UsageError

CHUNK_CHARS = 1 << 20  # characters tokenized per call (the Rust tokenizer encodes a batch in parallel)
SEGMENT_CHARS = 1 << 16  # a long document is cut into segments of about this size, at safe cuts only


def pieces(spec: str, split: str) -> Iterator[Piece]:
    """``sources.pieces`` read as a stream (a hub dataset is streamed, not downloaded)."""
    return sources.pieces(spec, split, streaming=True)


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


# The last whitespace character of a run, followed by a word: cutting before it is _cut_at's cut,
# found inside one piece (a long line, read in parts, has few piece boundaries that end in whitespace).
_INSIDE = re.compile(r"\s(?=\S)")


def _bounded(source: Iterator[Piece], limit: int) -> Iterator[Piece]:
    """The pieces of ``source`` in parts of at most ``limit`` characters (a long row or line is tokenized
    in segments like any other text, so memory does not grow with the length of a line)."""
    for text, starts in source:
        if len(text) <= limit:
            yield text, starts
            continue
        for i in range(0, len(text), limit):
            yield text[i:i + limit], starts and i == 0


def token_chunks(tokenizer, source: Iterator[Piece], chunk_chars: int = CHUNK_CHARS,
                 segment_chars: int = SEGMENT_CHARS) -> Iterator[list[int]]:
    """``sources.token_stream`` of the documents in ``source``, a chunk of token ids at a time."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise UsageError("the tokenizer has no EOS token to separate documents")
    segments: list[tuple[list[str], bool]] = []  # (parts, starts a document); tokenized one batch at a time
    seg_len = batch_len = 0
    first_doc = True

    def encode(done: list[tuple[list[str], bool]]) -> list[int]:
        nonlocal first_doc
        out: list[int] = []
        for (_, starts), ids in zip(done, encode_batch(tokenizer, ["".join(p) for p, _ in done])):
            if starts and not first_doc:
                out.append(eos)
            first_doc = first_doc and not starts
            out.extend(ids)
        return out

    for text, starts in _bounded(source, segment_chars):
        new_segment = starts or not segments
        if not new_segment and seg_len >= segment_chars:
            parts = segments[-1][0]
            at = _cut_at(parts[-1], text)
            if at is None and (m := _INSIDE.search(text)) is not None:
                at = m.start()  # a long line: cut inside it, before the last whitespace of a run
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
    """The first ``max_tokens`` of ``sources.token_stream`` of the held-out split, read as a stream."""
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
