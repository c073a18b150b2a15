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
    p.add_argument("--diagnostics", nargs="*", default=[], metavar="JSON",
                   help="anneal_diagnostics.json per rung: ESS traces for --ess-plot")
    p.add_argument("--losses", nargs="*", default=[], metavar="CSV", help="losses.csv per rung for --losses-plot")
    p.add_argument("--benchmarks", nargs="*", default=[], metavar="TSV",
                   help="Snakemake benchmark files of the run's jobs: the cost per method (pita.cost)")
    p.add_argument("--gpu-jobs", nargs="*", default=[], metavar="JOB",
                   help="jobs that ran with a GPU requested, named as their benchmark files (md_seed, train_0, "
                        "baseline_smc, ...): their wall time counts as GPU hours")
    p.add_argument("--cost", default=None, help="CSV of the cost per method to write (needs --benchmarks)")
    p.add_argument("--ess-plot", default=None, help="PNG of the ESS traces to write")
    p.add_argument("--losses-plot", default=None, help="PNG of the training losses to write")
    p.add_argument("--accuracy-plot", default=None, help="PNG of accuracy against energy evaluations to write")


def run(args: argparse.Namespace) -> int:
    from ..errors import PitaInputError
    from ..report import check_report_outputs, write_report

    if args.out is None and args.summary is None:
        raise PitaInputError("--out/--summary: give at least one output")
    check_report_outputs(args.out, args.summary)  # every output path before any output is written
    if args.cost is not None and not args.benchmarks:
        raise PitaInputError("--cost: needs --benchmarks")
    write_report(args.metrics, out_html=args.out, summary_csv=args.summary, title=args.title,
                 diagnostics=args.diagnostics, losses=args.losses, benchmarks=args.benchmarks,
                 gpu_jobs=args.gpu_jobs, cost_csv=args.cost, ess_plot=args.ess_plot, losses_plot=args.losses_plot,
                 accuracy_plot=args.accuracy_plot)
    return 0
