"""`pdp-gpt2 export`: write a finalized sparse model as dense, compressed or 2:4 (or, with --shrink, as a
narrower dense model without its pruned MLP neurons and attention heads), with its size table."""
from __future__ import annotations

import argparse

from pdp_gpt2.export.writer import FORMATS, VALUES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL_OR_RUN_DIR",
                        help="a finalized HF model directory (config.json + *.safetensors), "
                             "or a training run directory that contains final/")
    parser.add_argument("--format", default=None, choices=FORMATS,
                        help="dense: copy of the finalized HF directory; compressed: bitmask + nonzero values "
                             "(or b-bit codes + scales for quantization-masked weights); 2:4: kept values + "
                             "2-bit indices, for 2:4-pruned models only (default: compressed; dense with --shrink)")
    parser.add_argument("--out", required=True,
                        help="output directory; must not exist or be empty, and must not be or hold the model")
    parser.add_argument("--values", default="auto", choices=list(VALUES),
                        help="dtype of the stored nonzero values: auto = the model's own (exact round trip); "
                             "fp16 halves them but rounds, so the loaded model is no longer identical "
                             "(default: %(default)s)")
    parser.add_argument("--no_codes", action="store_true",
                        help="store raw values even where the weights lie on a b-bit quantization grid")
    parser.add_argument("--shrink", action="store_true",
                        help="remove the MLP neurons or attention heads pruned whole (a --pattern neurons or heads "
                             "run) and write the narrower model as a plain Hugging Face directory: same logits, "
                             "fewer parameters, faster")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier export in --out (a directory holding anything else is refused)")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from pdp_gpt2.export.shrink import describe
    from pdp_gpt2.export.writer import export, markdown_table

    hf_logging.disable_progress_bar()  # the size table is the output; no loading bars around it
    fmt = args.format or ("dense" if args.shrink else "compressed")
    report = export(args.model, args.out, fmt, values=args.values, codes=not args.no_codes,
                    overwrite=args.overwrite, require_tokenizer=True, shrink=args.shrink)
    if args.shrink:
        s = report["shrink"]
        p0, p1 = s["parameters_before"], s["parameters_after"]
        print(f"pdp-gpt2 export: {report['source']} -> {report['out']} (shrunk: {describe(s)})")
        for why in s["kept_as_zeros"]:
            print(f"note: {why}")
        print(f"parameters: {p0:,} -> {p1:,} ({p1 / p0:.1%})")
        print(markdown_table(report))
        print(f"size report: {report['out']}/size_report.json")
        return 0
    encodings = ", ".join(f"{n} {enc}" for enc, n in report["encodings"].items())
    print(f"pdp-gpt2 export: {report['source']} -> {report['out']} ({fmt}; {encodings})")
    print(markdown_table(report))
    print(f"size report: {report['out']}/size_report.json")
    return 0
