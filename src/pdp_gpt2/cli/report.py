"""`pdp-gpt2 report`: plots + report.md + self-contained report.html + slides.pdf
(see pdp_gpt2.report.report and pdp_gpt2.report.slides)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                        help="run directories (with summary.json) and/or sweep directories (searched recursively)")
    parser.add_argument("--out", required=True,
                        help="directory for the PNGs, report.md, report.html and slides.pdf")
    parser.add_argument("--title", default="PDP pruning report",
                        help="title of the report, the dashboard and the first slide")
    parser.add_argument("--note", default="",
                        help="one line under the title on the first slide, e.g. the date or venue")
    parser.add_argument("--cost", action="append", default=[], metavar="JSON",
                        help="cost inputs for the cost slide (repeatable): a benchmarks/step_overhead.py JSON, "
                             "an export's size_report.json, or {\"speed\": {variant: ratio to dense}}")


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.report.report import write_report

    res = write_report(args.paths, args.out, args.title, args.note, args.cost)
    deck = res["slides"]
    print(f"pdp-gpt2 report: {res['runs']} run(s), {res['failed']} failed trial(s); "
          f"{len(res['pngs'])} plot(s) in {res['out']} (report.md, report.html"
          + (f", slides.pdf with {deck['pages']} slides)" if deck else ")"))
    for s in res["skipped"]:
        print(f"  {s}")
    for s in (deck or {}).get("skipped", []):
        print(f"  Slide not made: {s}")
    return 0
