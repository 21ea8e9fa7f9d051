"""`pdp-gpt2 report`: plots + report.md + self-contained report.html (see pdp_gpt2.report.report)."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_SWEEP_DIR",
                        help="run directories (with summary.json) and/or sweep directories (searched recursively)")
    parser.add_argument("--out", required=True, help="directory for the PNGs, report.md and report.html")
    parser.add_argument("--title", default="PDP pruning report", help="report and dashboard title")


def run(args: argparse.Namespace) -> int:
    from pdp_gpt2.report.report import write_report

    res = write_report(args.paths, args.out, args.title)
    print(f"pdp-gpt2 report: {res['runs']} run(s), {res['failed']} failed trial(s); "
          f"{len(res['pngs'])} plot(s) in {res['out']} (report.md, report.html)")
    for s in res["skipped"]:
        print(f"  {s}")
    return 0
