"""--streaming over a file with one very long line: the same blocks as the in-memory path, and the
memory of a file of normal lines.  Measured in this process: the longest text handed to the tokenizer
(a counting stand-in around it: its own memory grows with that) and Python's peak allocation (tracemalloc)."""
from __future__ import annotations

import random
import tracemalloc

import pytest

from helpers import CORPUS_LINES, tiny_tokenizer
from pdp_gpt2.data import sources
from pdp_gpt2.data import streaming as S
from pdp_gpt2.data.sources import load_split_texts, tokenize_and_group

CHUNK, SEGMENT, BLOCK = 4096, 512, 32


def _text(n_words: int, seed: int, sep) -> str:
    rnd = random.Random(seed)
    words = " ".join(CORPUS_LINES).split()
    return "".join(w + sep(rnd) for w in rnd.choices(words, k=n_words))


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    """Two 4-file corpora with the same words (train is part0 + part1): in one, part0 is a single line of
    ~250 000 characters; in the other, the same words in lines of a dozen words."""
    root = tmp_path_factory.mktemp("longline")
    one_space = lambda r: " " if r.random() < 0.95 else "  "  # noqa: E731  (runs of two: cuts must keep them)
    lines = lambda r: "\n" if r.random() < 0.08 else one_space(r)  # noqa: E731
    out = {}
    for kind, sep in (("long", one_space), ("normal", lines)):
        d = root / kind
        d.mkdir()
        (d / "part0.txt").write_text(_text(40_000, 0, sep) + "\n")
        for i in (1, 2, 3):
            (d / f"part{i}.txt").write_text(_text(200, i, lines) + "\n")
        out[kind] = str(d / "part*.txt")
    tok = tiny_tokenizer([_text(5000, 9, lines)])
    return out, tok


def _stream(spec, tok, monkeypatch) -> dict:
    longest = []
    real = S.encode_batch

    def counting(tokenizer, texts):
        longest.append(max(len(t) for t in texts))
        return real(tokenizer, texts)

    monkeypatch.setattr(S, "encode_batch", counting)
    monkeypatch.setattr(sources, "READ_CHARS", SEGMENT, raising=False)  # a line is read SEGMENT characters at a time
    ds = S.StreamingBlocks(lambda: S.pieces(spec, "train"), tok, BLOCK, chunk_chars=CHUNK, segment_chars=SEGMENT)
    tracemalloc.start()
    try:
        n_blocks = sum(1 for _ in ds.blocks())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {"blocks": n_blocks, "peak": peak, "longest": max(longest), "peak_tokens": ds.peak_tokens}


def test_a_long_line_streams_in_the_memory_of_normal_lines(corpora, monkeypatch):
    specs, tok = corpora
    normal = _stream(specs["normal"], tok, monkeypatch)
    long = _stream(specs["long"], tok, monkeypatch)
    assert long["blocks"] > 1000  # the long line is most of the corpus
    assert long["longest"] <= 8 * SEGMENT  # the tokenizer sees segments, never the line
    assert long["peak_tokens"] <= CHUNK + 8 * SEGMENT + BLOCK
    assert long["peak"] <= 1.2 * normal["peak"], (long["peak"], normal["peak"])


def test_a_long_line_gives_the_in_memory_blocks(corpora, monkeypatch):
    specs, tok = corpora
    monkeypatch.setattr(sources, "READ_CHARS", SEGMENT, raising=False)
    expected = tokenize_and_group(tok, load_split_texts(specs["long"], "train"), BLOCK)
    ds = S.StreamingBlocks(lambda: S.pieces(specs["long"], "train"), tok, BLOCK, chunk_chars=CHUNK,
                           segment_chars=SEGMENT)
    got = list(ds.blocks())
    assert len(got) == len(expected) and all((g == e).all() for g, e in zip(got, expected))


def test_lines_read_in_parts_are_the_lines(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("abcdefg\nhi\x0bjk\n\nlast")
    parts = list(sources._line_parts(f, 3))
    assert "".join(p for p, _ in parts) == f.read_text()
    assert max(len(p) for p, _ in parts) <= 3
    assert [p for p, _ in parts if _] == ["g\n", "hi\x0b", "jk\n", "\n"]  # the parts that end a line
    assert list(sources._parts_of_lines(f, 1, 3, 3)) == ["hi\x0b", "jk\n"]  # lines 1 and 2 of _lines' count
    assert sources._line_count.__wrapped__(f, 0, 0) == (len(list(sources._lines(f))), True)
