"""`pita` command line: one subcommand per step of the method.

Each subcommand lives in pita/commands/<name>.py and defines
    HELP: str
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int
User-facing input problems raise PitaInputError: printed as one line, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PitaInputError

SUBCOMMANDS = ["md", "train", "anneal", "relax", "evaluate", "report", "export", "baseline"]


def _available():
    for name in SUBCOMMANDS:
        try:
            yield name, importlib.import_module(f"pita.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pita.commands.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="pita", description="Progressive Inference-Time Annealing")
    parser.add_argument("--version", action="version", version=f"pita {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, mod in _available():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args) or 0)
    except PitaInputError as exc:
        print(f"pita {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
