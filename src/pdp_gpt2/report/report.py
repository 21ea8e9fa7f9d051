"""Runs and sweeps -> PNG plots, ``report.md`` and a self-contained ``report.html``.

Input is any mix of run directories (they hold ``summary.json``) and sweep
directories (``sweep.csv`` + ``trial-NNN/``); every ``summary.json`` below a given
path is one run.  Only finished runs are plotted; failed sweep trials are
listed; a damaged run is left out in one warning line.  A plot whose data is
missing is skipped with the reason written into the report, never an exception.

The report is built once as a list of blocks and rendered twice (Markdown,
HTML with the PNGs base64-embedded), so the two always say the same thing.
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from pdp_gpt2.errors import UsageError, disk_problem
from pdp_gpt2.report import methods
from pdp_gpt2.report.labels import variant, with_tau  # noqa: F401  (variant: re-exported)



@dataclass
class Run:
    dir: Path
    summary: dict
    metrics: list[dict] = field(default_factory=list)
    hist: dict | None = None

    # the few fields the plots and tables read, with safe defaults for older summaries
    @property
    def method(self) -> str:
        return self.summary.get("method", "?")

    @property
    def spec(self):
        """The method's MethodSpec (report/methods.py): what it can do, how it is labelled and coloured."""
        return methods.spec(self.method)

    @property
    def prunes(self) -> bool:
        """False for the dense reference (a method without masks)."""
        return self.spec.prunes

    @property
    def distilled(self) -> bool:
        return (self.cfg.get("distill") or 0) > 0

    @property
    def cfg(self) -> dict:
        return self.summary.get("config") or {}

    @property
    def pdp(self) -> dict:
        return self.cfg.get("pdp") or {}

    @property
    def target(self) -> float:
        return float(self.summary.get("sparsity_target") or 0.0)

    @property
    def actual(self) -> float:
        return float(self.summary.get("sparsity_actual") or 0.0)

    @property
    def ppl(self) -> float | None:
        return self.summary.get("perplexity")

    @property
    def ppl_dense(self) -> float | None:
        return self.summary.get("perplexity_dense")

    @property
    def tau(self) -> float:
        return float(self.summary.get("tau") or self.pdp.get("tau") or 0.0)

    @property
    def split(self) -> str:
        return self.summary.get("eval_split", "held-out")

    @property
    def layers(self) -> dict:
        return self.summary.get("layers") or {}

    @property
    def seed(self):
        return self.cfg.get("seed")

    @property
    def allocation(self) -> str:
        return self.pdp.get("allocation", "layer")

    @cached_property  # read once: several plots ask
    def layer_band(self) -> dict[str, float]:
        """Per-layer fraction of weights in the soft band (0.05 < m < 0.95) at the end of training:
        summary.json ``layers[name]["band"]`` where runs write it, else the layers.md column."""
        band = {n: d["band"] for n, d in self.layers.items() if isinstance(d, dict) and _is_num(d.get("band"))}
        return band or _layers_md_band(self.dir / "layers.md")

    @property
    def improved(self) -> bool:
        return bool(self.pdp.get("improved_masking"))

    @property
    def quantize(self) -> bool:
        return bool(self.pdp.get("quantize"))

    @property
    def custom_opt(self) -> bool:
        return bool(self.cfg.get("custom_optimizer"))

    @property
    def family(self) -> str:
        """The variant without tau: 'pdp', 'pdp+improved', 'gmp', ..."""
        return variant(self.summary)

    @property
    def label(self) -> str:
        """The family, plus '@tau=X' for a run of a method with tau (pdp) whose tau is not the default."""
        return with_tau(self.family, self.tau)


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise UsageError(f"{path}: metrics.jsonl is not text (not UTF-8)") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read metrics.jsonl ({e.strerror or e})") from None
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it, keep the rest
        if isinstance(rec, dict) and isinstance(rec.get("step"), (int, float)):
            out.append(rec)
    return out


def _is_num(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _layers_md_band(path: Path) -> dict[str, float]:
    """The 'soft band at end' column of a run's layers.md ('-' for runs without soft masks)."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and not cells[0].startswith(("layer", "**", "---")):
            try:
                out[cells[0]] = float(cells[4])
            except ValueError:
                continue
    return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: malformed {what} ({str(e).splitlines()[0]})") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def load_run(d: Path) -> Run:
    summary = _read_json(d / "summary.json", "summary.json")
    if not isinstance(summary, dict):
        raise UsageError(f"{d / 'summary.json'}: malformed summary.json (expected a JSON object)")
    method = summary.get("method", "?")
    if not isinstance(method, str) or not method:
        raise UsageError(f"{d / 'summary.json'}: malformed summary.json (method is {method!r}, not a name)")
    for key in ("perplexity", "perplexity_dense", "perplexity_soft", "sparsity_target", "sparsity_actual"):
        v = summary.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise UsageError(f"{d / 'summary.json'}: malformed summary.json ({key} is {v!r}, not a number)")
    for key in ("config", "layers"):
        if summary.get(key) is not None and not isinstance(summary[key], dict):
            raise UsageError(f"{d / 'summary.json'}: malformed summary.json ({key} is not an object)")
    hist = None
    try:  # optional: a damaged histogram file costs its one plot, not the report
        hist = json.loads((d / "mask_hist.json").read_text()) if (d / "mask_hist.json").is_file() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        pass
    return Run(d, summary, _jsonl(d / "metrics.jsonl"), hist if isinstance(hist, dict) else None)


def collect(paths: list[str | Path]) -> tuple[list[Run], list[dict]]:
    """(finished runs, failed sweep trials) under ``paths``.  A run whose files are damaged is left
    out in one warning line naming it and why: one bad run must not cost the report of the others."""
    runs, failed, seen = [], [], set()
    for p in map(Path, paths):
        if not p.exists():
            raise UsageError(f"no such run or sweep directory: {p}")
        found = [p / "summary.json"] if (p / "summary.json").is_file() else sorted(p.rglob("summary.json"))
        for s in found:
            if s.parent.resolve() not in seen and s.parent.name != "final":
                seen.add(s.parent.resolve())
                try:
                    runs.append(load_run(s.parent))
                except UsageError as e:
                    print(f"pdp-gpt2 report: warning: skipping a damaged run: {e}", file=sys.stderr, flush=True)
        for sc in ([p / "sweep.csv"] if (p / "sweep.csv").is_file() else sorted(p.rglob("sweep.csv"))):
            with open(sc) as f:
                failed += [dict(r, sweep=str(sc.parent)) for r in csv.DictReader(f) if r.get("status") != "ok"]
    if not runs and not failed:
        raise UsageError(f"no finished runs (summary.json) under {', '.join(map(str, paths))}")
    runs.sort(key=lambda r: (r.label, r.target, r.tau, str(r.dir)))
    return runs, failed


def _f(x, fmt="{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def percent(x: float, least: int = 2, most: int = 6) -> str:
    """``100 * x`` with ``least`` decimals, more where those would show a sparsity short of 1 as 100 (or
    one above 0 as 0); past ``most`` it is cut toward 50, never rounded onto 100 or 0."""
    for digits in range(least, most + 1):
        shown = f"{100 * x:.{digits}f}"
        if (float(shown) < 100 or x >= 1) and (float(shown) > 0 or x <= 0):
            return shown
    step = 10.0 ** -most
    return f"{(math.floor if x > 0.5 else math.ceil)(100 * x / step) * step:.{most}f}"


def runs_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    from pdp_gpt2.report.stats import dense_mean

    ref = dense_mean(runs)
    head = ["run", "variant", "tau", "target %", "actual %", "perplexity (hard)", "soft", "soft-to-hard gap",
            "vs dense fine-tuned", "steps", "train s"]
    rows = []
    for r in runs:
        s = r.summary
        gap = s.get("soft_hard_gap")
        target = f"{100 * r.target:g}"
        rows.append([r.dir.name, r.label, f"{r.tau:g}" if r.spec.uses_tau else "-",
                     target if float(target) < 100 or r.target >= 1 else percent(r.target), percent(r.actual), _f(r.ppl), _f(s.get("perplexity_soft")),
                     "-" if gap is None else f"{100 * gap:+.2f}%",
                     "-" if ref is None or r.ppl is None else f"{100 * (r.ppl / ref - 1):+.1f}%",
                     str(s.get("train_steps", "-")), _f(s.get("train_seconds"), "{:.0f}")])
    return head, rows


def build(runs: list[Run], failed: list[dict], out: Path, title: str) -> list[tuple]:
    """Write the PNGs into ``out`` and return the report as blocks."""
    from pdp_gpt2.report import plots

    blocks: list[tuple] = [("h1", title)]
    split = runs[0].split if runs else "held-out"
    blocks.append(("p", f"{len(runs)} finished run(s), {len(failed)} failed sweep trial(s). "
                        f"Perplexity is on the {split} split with the final hard-pruned weights; "
                        "where several runs share a point of a plot, the best one is shown. "
                        f"Generated {time.strftime('%Y-%m-%d %H:%M')}."))
    if runs:
        blocks.append(("h2", "Runs"))
        blocks.append(("table", *runs_table(runs)))
        seeds = seeds_table(runs)
        if seeds:
            blocks.append(("h2", "Perplexity over seeds"))
            blocks.append(("p", "Mean ± sample standard deviation over seeds (n = number of seeds), "
                                "then each seed's value."))
            blocks.append(("table", *seeds))
        tasks = task_table(runs)
        if tasks:  # runs made with --eval_tasks; with none, the report has no trace of this section
            blocks.append(("h2", "lm-eval task scores"))
            blocks.append(("p", "lm-evaluation-harness on the final hard-pruned weights (train --eval_tasks), "
                                "next to the perplexity of the same runs; ↑ higher is better, ↓ lower; where a "
                                "point has several seeds, mean ± sample standard deviation."))
            blocks.append(("table", *tasks))
    if failed:
        blocks.append(("h2", "Failed trials"))
        blocks.append(("table", ["sweep", "trial", "returncode", "error"],
                       [[Path(r["sweep"]).name, r.get("trial", ""), r.get("returncode", ""), r.get("error", "")]
                        for r in failed]))
    if not runs:
        return blocks
    for name, (ptitle, _, _) in plots.PLOTS.items():
        blocks.append(("h2", ptitle))
        reason = plots.save_plot(name, runs, out / f"{name}.png")
        blocks.append(("p", f"Skipped: {reason}.") if reason else ("img", ptitle, f"{name}.png"))
    blocks.append(("h2", "Dashboard"))
    plots.save_dashboard(runs, out / "dashboard.png", title, headline(runs))
    blocks.append(("img", "Dashboard", "dashboard.png"))
    return blocks


def task_table(runs: list[Run]) -> tuple[list[str], list[list[str]]] | None:
    """lm-eval scores per variant and target sparsity next to the perplexity (report/tasks.py);
    None when no run has any."""
    from pdp_gpt2.report import tasks

    return tasks.table(runs)


def seeds_table(runs: list[Run]) -> tuple[list[str], list[list[str]]] | None:
    """Variant x sparsity with the seed spread; None when no point has more than one seed."""
    from pdp_gpt2.report.stats import any_repeats, points

    pts = points(runs)
    if not any_repeats(pts):
        return None
    rows = [[lab, f"{100 * t:g}", str(p.n), f"{p.mean:.2f}", f"{p.sd:.2f}" if p.n > 1 else "-",
             ", ".join(f"{s}: {v:.2f}" for s, v in zip(p.seeds, p.values))]
            for lab, by in sorted(pts.items()) for t, p in sorted(by.items())]
    return ["variant", "target %", "seeds", "mean", "sd", "per seed"], rows


def headline(runs: list[Run]) -> list[str]:
    """One line per target sparsity: the best variant and its perplexity (mean over seeds)."""
    from pdp_gpt2.report.stats import dense_mean, points

    pts = points([r for r in runs if r.prunes])
    out = []
    for t in sorted({t for by in pts.values() for t in by}):
        best = min((by[t] for by in pts.values() if t in by), key=lambda p: p.mean)
        out.append(f"{100 * t:g}%: best {best.label} {best.mean:.2f}")
    dense = dense_mean(runs)
    if dense is not None:
        out.insert(0, f"dense fine-tuned {dense:.2f}")
    return out


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for b in blocks:
        if b[0] == "h1":
            out.append(f"# {b[1]}\n")
        elif b[0] == "h2":
            out.append(f"## {b[1]}\n")
        elif b[0] == "p":
            out.append(b[1] + "\n")
        elif b[0] == "img":
            out.append(f"![{b[1]}]({b[2]})\n")
        elif b[0] == "table":
            head, rows = b[1], b[2]
            cell = lambda x: str(x).replace("|", "\\|")  # noqa: E731
            out.append("\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
                                 + ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]) + "\n")
    return "\n".join(out)


CSS = ("body{font-family:sans-serif;max-width:1250px;margin:2em auto;padding:0 1em;color:#222}"
       "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}"
       "td:first-child,td:nth-child(2){text-align:left}img{max-width:100%;border:1px solid #eee}")


def to_html(blocks: list[tuple], out: Path) -> str:
    """HTML with every PNG inlined as a data: URI, so the file can be mailed or attached alone."""
    e = html.escape
    body = []
    for b in blocks:
        if b[0] in ("h1", "h2", "p"):
            body.append(f"<{b[0]}>{e(b[1])}</{b[0]}>")
        elif b[0] == "img":
            data = base64.b64encode((out / b[2]).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{e(b[1])}" src="data:image/png;base64,{data}"></figure>')
        elif b[0] == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    title = e(blocks[0][1]) if blocks else "report"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(paths: list[str | Path], out: str | Path, title: str = "PDP pruning report", note: str = "",
                 cost_files: list[str | Path] | None = None) -> dict:
    """Collect, plot and write report.md + report.html + slides.pdf into ``out``; returns what was written."""
    from pdp_gpt2.atomic import atomic_write_text
    from pdp_gpt2.report.findings import load_cost
    from pdp_gpt2.report.slides import write_slides

    runs, failed = collect(paths)
    cost = load_cost(cost_files or [])  # before anything is written: a bad --cost file is one line
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out}: cannot create the directory ({e.strerror or e})") from None
    # Everything is written into a staging directory first and moved into ``out`` at the end: a full
    # disk midway leaves no partial report, and an earlier one there stays as it was.
    try:
        staging = Path(tempfile.mkdtemp(prefix=".report-partial-", dir=out))
    except OSError as e:
        raise UsageError(f"--out {out}: cannot write there ({e.strerror or e})") from None
    try:
        blocks = build(runs, failed, staging, title)
        deck = None
        if runs:
            deck = write_slides(runs, staging / "slides.pdf", title, note, cost)
            blocks.append(("h2", "Slides"))
            blocks.append(("p", f"slides.pdf: {deck['pages']} slides."
                                + "".join(f" Slide not made: {s}." for s in deck["skipped"])))
        atomic_write_text(staging / "report.md", to_markdown(blocks))
        atomic_write_text(staging / "report.html", to_html(blocks, staging))
        for name in ("report.md", "report.html"):
            (staging / name).chmod(0o644)  # atomic writes come out 0600; a report is meant to be shared
        for f in sorted(staging.iterdir()):  # renames within one directory: they take no new space
            os.replace(f, out / f.name)
    except Exception as e:
        if isinstance(e, UsageError) or (why := disk_problem(e)) is None:
            raise
        raise UsageError(f"--out {out}: {why} while writing the report; nothing of it was written") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pngs = [b[2] for b in blocks if b[0] == "img"]
    skipped = [b[1] for b in blocks if b[0] == "p" and b[1].startswith("Skipped")]
    return {"runs": len(runs), "failed": len(failed), "pngs": pngs, "skipped": skipped, "out": str(out),
            "slides": deck}
