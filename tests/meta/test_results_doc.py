"""The hand-written summary of docs/results.md ("Reading the numbers") quotes docs/results.csv, the
benchmark's own output: every mean ± sd and ratio in its table is recomputed here from the CSV, so an
edited number or a rerun that moved it cannot pass unnoticed."""
import csv
import re
import statistics

from helpers import ROOT

DOC, CSV = ROOT / "docs" / "results.md", ROOT / "docs" / "results.csv"


def _ppl() -> dict:
    g: dict = {}
    for r in csv.DictReader(CSV.open()):
        if r["status"] == "ok":
            variant, _, rest = r["trial"].partition("-s")
            sparsity = rest.split("-")[0]
            g.setdefault((variant, sparsity), []).append(float(r["perplexity"]))
    return g


def _summary_rows() -> list[list[str]]:
    text = DOC.read_text()
    section = text[text.index("## Reading the numbers"):text.index("### Where PDP loses")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines()
            if re.match(r"\| \d\d%", line)]


def _mean_sd(xs):
    return f"{statistics.mean(xs):.2f} ± {statistics.stdev(xs):.2f}"


def test_the_summary_table_is_the_csv():
    g = _ppl()
    rows = _summary_rows()
    assert len(rows) == 5
    for sparsity, pdp, other, ratio, *_ in rows:
        s = sparsity.split("%")[0]
        suffix = "+distill" if "distilled" in sparsity else ""
        ours = g[("pdp" + suffix, s)]
        name, value = other.split(" ", 1)
        theirs = g[(name, s)]
        assert len(ours) == len(theirs) == 3, (sparsity, name)
        assert pdp == _mean_sd(ours) and value == _mean_sd(theirs), (sparsity, pdp, other)
        best = min(statistics.mean(v) for (variant, sp), v in g.items()
                   if sp == s and variant.endswith(suffix) and variant.split("+")[0] not in ("pdp", "dense")
                   and (suffix or "+" not in variant))
        assert statistics.mean(theirs) == best, (sparsity, name)  # it is the best other method
        assert ratio.strip("*") == f"{statistics.mean(ours) / statistics.mean(theirs):.3f}", sparsity
