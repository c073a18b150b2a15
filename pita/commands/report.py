"""`pita report`: every rung's metrics.json -> summary.csv and a self-contained HTML report.

    pita report --metrics results/eval/rung_*/metrics.json --out report.html --summary summary.csv
"""
from __future__ import annotations

import argparse

HELP = "summarise metrics.json files into summary.csv and a self-contained HTML report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json files, one per rung (and baseline)")
    p.add_argument("--out", default=None, help="HTML report to write (plots embedded)")
    p.add_argument("--summary", default=None, help="CSV summary to write (one row per metrics file)")
    p.add_argument("--title", default="PITA evaluation report", help="report title")


def run(args: argparse.Namespace) -> int:
    from ..errors import PitaInputError
    from ..report import check_report_outputs, write_report

    if args.out is None and args.summary is None:
        raise PitaInputError("--out/--summary: give at least one output")
    check_report_outputs(args.out, args.summary)  # every output path before any output is written
    write_report(args.metrics, out_html=args.out, summary_csv=args.summary, title=args.title)
    return 0
