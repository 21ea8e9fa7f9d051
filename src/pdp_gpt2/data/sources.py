"""Dataset spec -> documents -> token ids -> fixed-length blocks.

Three kinds of dataset spec are understood by :func:`pieces` and :func:`load_split_texts`:

* ``"shakespeare"`` – the embedded public-domain corpus (split by whole work,
  see ``assets/corpus/PROVENANCE.md``);
* local ``.txt`` files: a path, a glob, or several of either separated by commas;
* anything else is a Hugging Face dataset, ``"name"`` or ``"name:config"``.

:func:`pieces` is the one document source: the lines or rows of one split, read
lazily.  The in-memory path joins them into documents (:func:`load_split_texts`),
``--streaming`` tokenizes them as they come (streaming.py).  The split rules are in
splits.py.
"""
from __future__ import annotations

import codecs
import functools
import glob
import gzip
import json
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pdp_gpt2.data.splits import (SPLITS, Piece, check_split, doc_lines, documents, files_by_name, files_of_split,
                                  line_range)
from pdp_gpt2.errors import UsageError

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # src/pdp_gpt2/assets
EMBEDDED_CORPUS = ASSETS / "corpus" / "shakespeare.jsonl.gz"
EMBEDDED_MODEL_DIR = ASSETS / "shakespeare-gpt2"
DEFAULT_DATASET = "shakespeare"
DEFAULT_MODEL = "embedded"  # resolved to EMBEDDED_MODEL_DIR by models.load_model_and_tokenizer


def load_split_texts(spec: str, split: str) -> list[str]:
    """The documents of one split of a dataset spec: :func:`pieces`, joined."""
    texts = documents(pieces(spec, split))
    if not any(t.strip() for t in texts):
        raise UsageError(f"the {split} split of dataset {spec.strip()!r} is empty")
    return texts


def pieces(spec: str, split: str, streaming: bool = False) -> Iterator[Piece]:
    """The documents of ``split`` as pieces (lines or rows), read lazily (see splits.py for the rules).

    ``streaming``: a hub dataset is ``load_dataset(..., streaming=True)`` instead of the (cached)
    download, and a local file's lines come in parts of at most :data:`READ_CHARS` characters (a
    file of one long line is never held whole).  Local files are always read line by line.
    """
    check_split(split)
    spec = spec.strip()
    kind = source_kind(spec)
    if kind == "embedded":
        for doc in load_embedded(split):  # small: bundled with the package
            yield from doc_lines(doc.splitlines(keepends=True))
    elif kind == "local":
        yield from _local_pieces(expand_paths(spec), split, READ_CHARS if streaming else None)
    else:
        from pdp_gpt2.data.hub_datasets import hf_pieces  # datasets is slow to import; only when needed

        yield from hf_pieces(spec, split, streaming=streaming)


def load_embedded(split: str) -> list[str]:
    """Texts of the embedded Shakespeare works in ``split`` (one document per work)."""
    with gzip.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["text"] for r in rows if r["split"] == split]


def embedded_titles(split: str) -> list[str]:
    """Titles of the embedded works in ``split``, in corpus order."""
    with gzip.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        return [r["title"] for r in map(json.loads, f) if r["split"] == split]


def source_kind(spec: str) -> str:
    """Where a dataset spec is read from: 'embedded' (the bundled corpus), 'local' (files) or 'hub'."""
    spec = spec.strip()
    if spec == DEFAULT_DATASET:
        return "embedded"
    return "local" if looks_local(spec) else "hub"


def looks_local(spec: str) -> bool:
    """Paths, globs and .txt names are local; ``name``, ``org/name`` and ``name:config`` are hub datasets."""
    def local(p: str) -> bool:
        return (p.endswith(".txt") or any(c in p for c in "*?[\\") or p.startswith((".", "/", "~"))
                or p.count("/") > 1 or Path(p).exists())
    return any(local(p.strip()) for p in spec.split(","))


def expand_paths(spec: str) -> list[Path]:
    """Comma-separated paths and globs → sorted unique files; one clear error per bad part."""
    paths: set[Path] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if any(c in part for c in "*?["):
            matches = [Path(m) for m in glob.glob(str(Path(part).expanduser()), recursive=True) if Path(m).is_file()]
            if not matches:
                raise UsageError(f"glob {part!r} matches no files")
            paths.update(matches)
        elif Path(part).expanduser().is_file():
            paths.add(Path(part).expanduser())
        elif Path(part).expanduser().is_dir():
            raise UsageError(f"dataset path {part} is a directory; pass a file, or a glob of its files "
                             f"such as '{part.rstrip('/')}/*.txt'")
        else:
            raise UsageError(f"dataset file not found: {part}")
    if not paths:
        raise UsageError(f"no files in dataset spec {spec!r}")
    return sorted(paths)


# ---- local files, a line at a time -------------------------------------------------------
def check_local(spec: str) -> None:
    """UsageError now (before any work) for a local spec whose files cannot be split: a missing path,
    a directory, names that say some splits but not all; nothing is read."""
    if source_kind(spec) == "local":
        files_by_name(expand_paths(spec))


def _local_pieces(paths: list[Path], split: str, limit: int | None = None) -> Iterator[Piece]:
    """``limit``: read lines in parts of at most this many characters (None: whole lines)."""
    if len(paths) >= 3 or files_by_name(paths) is not None:  # whole files
        for p in files_of_split(paths, split):
            nonblank = False
            for piece in doc_lines(_lines(p) if limit is None else (part for part, _ in _line_parts(p, limit))):
                nonblank = nonblank or bool(piece[0].strip())
                yield piece
            if not nonblank:
                raise UsageError(f"dataset file is empty: {p}")
        return
    for p in paths:  # each file cut by lines: count first (once per process), then read the part
        st = p.stat()
        n, nonblank = _line_count(p, st.st_size, st.st_mtime_ns)
        if not nonblank:
            raise UsageError(f"dataset file is empty: {p}")
        lo, hi = line_range(n, split)
        yield from doc_lines(islice(_lines(p), lo, hi) if limit is None else _parts_of_lines(p, lo, hi, limit))


def _lines(path: Path) -> Iterator[str]:
    """The lines ``path.read_text().splitlines(keepends=True)`` gives, without reading the file whole."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:  # splits on \n only; splitlines() also cuts at \v, \f, \u2028, ...
                yield from line.splitlines(keepends=True)
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


READ_CHARS = 1 << 16  # a streamed line is read at most this many characters at a time


def _line_parts(path: Path, limit: int) -> Iterator[tuple[str, bool]]:
    """:func:`_lines` in parts of at most ``limit`` characters: (part, whether it ends its line)."""
    try:
        with open(path, encoding="utf-8") as f:
            while chunk := f.readline(limit):  # stops at "\n" or after limit characters
                for part in chunk.splitlines(keepends=True):
                    yield part, part.splitlines()[0] != part
    except UnicodeDecodeError:
        raise _not_utf8(path) from None


def _parts_of_lines(path: Path, lo: int, hi: int, limit: int) -> Iterator[str]:
    """The parts of lines lo..hi-1 (``islice(_lines(path), lo, hi)``, never a line whole)."""
    line = 0
    for part, ends in _line_parts(path, limit):
        if line >= hi:
            return
        if line >= lo:
            yield part
        line += ends


def _not_utf8(path: Path) -> UsageError:
    """The error of the first byte that is not UTF-8, found a chunk at a time."""
    decoder, pos = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(1 << 20)
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                return UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {pos - pending + e.start})")
            if not chunk:
                return UsageError(f"{path} is not UTF-8 text")
            pos += len(chunk)


@functools.lru_cache(maxsize=64)
def _line_count(path: Path, size: int, mtime_ns: int) -> tuple[int, bool]:
    """(lines, any non-blank) of a file; size and mtime are in the key, so an edited file is counted again."""
    n, nonblank, open_line = 0, False, False
    for part, ends in _line_parts(path, READ_CHARS):  # a long line is counted without holding it whole
        n, open_line = n + ends, not ends
        nonblank = nonblank or bool(part.strip())
    return n + open_line, nonblank


# ---- documents -> tokens -> blocks ---------------------------------------------------------
def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All documents as one 1-D LongTensor, joined by the EOS token (none at either end)."""
    if tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    for i, doc in enumerate(encode_batch(tokenizer, texts)):
        if i:
            ids.append(tokenizer.eos_token_id)
        ids.extend(doc)
    return torch.tensor(ids, dtype=torch.long)


def encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, no special tokens added."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        # The Rust tokenizer encodes the batch in parallel and, unlike
        # tokenizer(...), does not warn about documents longer than n_positions.
        return [e.ids for e in backend.encode_batch(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def tokenize_and_group(tokenizer, texts: list[str], block_size: int) -> torch.Tensor:
    """``[n_blocks, block_size]`` LongTensor of consecutive tokens; the remainder is dropped, nothing padded."""
    if block_size < 2:
        raise UsageError(f"block_size must be at least 2, got {block_size}")
    stream = token_stream(tokenizer, texts)
    n_blocks = len(stream) // block_size
    if n_blocks == 0:
        raise UsageError(f"the text has {len(stream)} tokens, fewer than one block of {block_size}")
    return stream[: n_blocks * block_size].view(n_blocks, block_size)


class LMBlockDataset(Dataset):
    """Rows of a block tensor as causal-LM examples.  Labels equal inputs: HF models shift internally."""

    def __init__(self, blocks: torch.Tensor):
        if blocks.dim() != 2:
            raise ValueError(f"blocks must be 2-D [n_blocks, block_size], got shape {tuple(blocks.shape)}")
        self.blocks = blocks

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        row = self.blocks[i]
        return {"input_ids": row, "labels": row}
