"""Corpus → token ids → fixed-length blocks.

Three kinds of dataset spec are understood by :func:`load_split_texts`:

* ``"shakespeare"`` – the embedded public-domain corpus (split by whole work,
  see ``assets/corpus/PROVENANCE.md``);
* local ``.txt`` files: a path, a glob, or several of either separated by commas;
* anything else is a Hugging Face dataset, ``"name"`` or ``"name:config"``.
"""
from __future__ import annotations

import glob
import gzip
import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from pdp_gpt2.errors import UsageError

ASSETS = Path(__file__).resolve().parent.parent / "assets"  # src/pdp_gpt2/assets
EMBEDDED_CORPUS = ASSETS / "corpus" / "shakespeare.jsonl.gz"
EMBEDDED_MODEL_DIR = ASSETS / "shakespeare-gpt2"
DEFAULT_DATASET = "shakespeare"
DEFAULT_MODEL = "embedded"  # resolved to EMBEDDED_MODEL_DIR by models.load_model_and_tokenizer
SPLITS = ("train", "validation", "test")

# Local files and HF datasets without a held-out split get one carved out:
# these are the fractions of lines (one or two files) or rows (HF) held out.
HELD_OUT_FRACTION = 0.05


def load_split_texts(spec: str, split: str) -> list[str]:
    """Return the documents of one split of a dataset spec (see the module docstring).

    Local files: with three or more files the split is by whole file, in sorted
    path order: the last file is ``test``, the one before ``validation``, the
    rest ``train``.  With one or two files each file is cut by lines: the
    first 90 % is ``train``, the next 5 % ``validation``, the last 5 % ``test``.
    Each file (or part of one) is one document.
    """
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    spec = spec.strip()
    if spec == DEFAULT_DATASET:
        texts = load_embedded(split)
    elif _looks_local(spec):
        texts = _local_split(_expand_paths(spec), split)
    else:
        from pdp_gpt2.data.hub_datasets import load_hf_split  # datasets is slow to import; only when needed

        texts = load_hf_split(spec, split)
    if not any(t.strip() for t in texts):
        raise UsageError(f"the {split} split of dataset {spec!r} is empty")
    return texts


def load_embedded(split: str) -> list[str]:
    """Texts of the embedded Shakespeare works in ``split`` (one document per work)."""
    with gzip.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [r["text"] for r in rows if r["split"] == split]


def embedded_titles(split: str) -> list[str]:
    """Titles of the embedded works in ``split``, in corpus order."""
    with gzip.open(EMBEDDED_CORPUS, "rt", encoding="utf-8") as f:
        return [r["title"] for r in map(json.loads, f) if r["split"] == split]


def _looks_local(spec: str) -> bool:
    """Paths, globs and .txt names are local; ``name``, ``org/name`` and ``name:config`` are hub datasets."""
    def local(p: str) -> bool:
        return (p.endswith(".txt") or any(c in p for c in "*?[\\") or p.startswith((".", "/", "~"))
                or p.count("/") > 1 or Path(p).exists())
    return any(local(p.strip()) for p in spec.split(","))


def _expand_paths(spec: str) -> list[Path]:
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
        else:
            raise UsageError(f"dataset file not found: {part}")
    if not paths:
        raise UsageError(f"no files in dataset spec {spec!r}")
    return sorted(paths)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise UsageError(f"dataset file is empty: {path}")
    return text


def _local_split(paths: list[Path], split: str) -> list[str]:
    if len(paths) >= 3:
        chosen = {"train": paths[:-2], "validation": paths[-2:-1], "test": paths[-1:]}[split]
        return [_read_text(p) for p in chosen]
    return [part for p in paths if (part := split_lines(_read_text(p), split))]


def split_lines(text: str, split: str) -> str:
    """The ``split`` part of one text cut by lines at 90 % / 95 %."""
    lines = text.splitlines(keepends=True)
    a = round(len(lines) * (1 - 2 * HELD_OUT_FRACTION))
    b = round(len(lines) * (1 - HELD_OUT_FRACTION))
    return "".join({"train": lines[:a], "validation": lines[a:b], "test": lines[b:]}[split])


def token_stream(tokenizer, texts: list[str]) -> torch.Tensor:
    """All documents as one 1-D LongTensor, joined by the EOS token (none at either end)."""
    if tokenizer.eos_token_id is None:
        raise UsageError("the tokenizer has no EOS token to separate documents")
    ids: list[int] = []
    for i, doc in enumerate(_encode_batch(tokenizer, texts)):
        if i:
            ids.append(tokenizer.eos_token_id)
        ids.extend(doc)
    return torch.tensor(ids, dtype=torch.long)


def _encode_batch(tokenizer, texts: list[str]) -> list[list[int]]:
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
