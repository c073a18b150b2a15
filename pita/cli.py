"""`pita` command line: one subcommand per step of the method.

Each subcommand lives in pita/commands/<name>.py and defines
    HELP: str
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int
Every problem with the input (a bad option included) is one line on stderr,
"pita <command>: error: <file or field>: <problem>", and exit status 2.
Options are never abbreviated: `--n-particle` is an error, not `--n-particles`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import PitaInputError

SUBCOMMANDS = ["md", "reference", "train", "anneal", "relax", "evaluate", "report", "export", "baseline", "budget", "umbrella"]


class OneLineParser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block) and no option abbreviations."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


def _available():
    for name in SUBCOMMANDS:
        try:
            yield name, importlib.import_module(f"pita.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"pita.commands.{name}":
                raise


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = OneLineParser(prog="pita", description="Progressive Inference-Time Annealing")
    parser.add_argument("--version", action="version", version=f"pita {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for name, mod in _available():
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
    except SystemExit as exc:  # a bad option (already reported in one line), or --help / --version
        return int(exc.code or 0)
    if unknown:
        print(f"pita {args.command}: error: unrecognized arguments: {' '.join(unknown)}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from .commands import check_run_controls

        check_run_controls(args)
        return int(args._run(args) or 0)
    except PitaInputError as exc:
        print(f"pita {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
