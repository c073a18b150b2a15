"""The `pita` subcommands, one module each (HELP, add_arguments, run), and the options they share."""
from __future__ import annotations

import argparse
import math

from ..errors import PitaInputError
from ..settings import _cli_type, check_seed

integer = _cli_type(int)
_finite_float = _cli_type(float)


def positive_float(text: str) -> float:
    """argparse type: a positive finite number (temperatures)."""
    value = _finite_float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_system(p: argparse.ArgumentParser, required: bool = True, help: str | None = None) -> None:
    p.add_argument("--system", required=required,
                   help=help or "system name (alanine_dipeptide, alanine_tripeptide, lj13, ...), an inline JSON "
                                "spec or a .json spec file")


def add_temperature(p: argparse.ArgumentParser, help: str = "temperature (K; reduced units for Lennard-Jones)") -> None:
    p.add_argument("--temperature", required=True, type=positive_float, help=help)


def add_device(p: argparse.ArgumentParser, default: str = "auto") -> None:
    p.add_argument("--device", default=default,
                   help=f"torch device: cpu, cuda, cuda:N or auto (CUDA when available) (default: {default})")


def add_seed(p: argparse.ArgumentParser, help: str = "random seed") -> None:
    p.add_argument("--seed", type=integer, default=0, help=f"{help} (default: 0)")


def add_rung(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--rung", type=integer, default=None, help=help)


def add_progress(p: argparse.ArgumentParser, default: bool | None = None) -> None:
    shown = {None: "only on a terminal", True: "yes", False: "no"}[default]
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=default,
                   help=f"progress bars (default: {shown})")


def add_md_run(p: argparse.ArgumentParser) -> None:
    """The run controls `pita md` and `pita reference` share (their settings are MDSettings')."""
    add_system(p)
    add_temperature(p)
    p.add_argument("--out", required=True, help="output sample set (.h5), written atomically")
    add_device(p)
    add_seed(p)
    add_rung(p, "rung index recorded in the output (default: 0)")
    add_progress(p)


def check_run_controls(args: argparse.Namespace) -> None:
    """Checks of the options every step shares (seed, temperature, rung)."""
    if getattr(args, "seed", None) is not None:
        check_seed(args.seed)
    t = getattr(args, "temperature", None)
    if t is not None and not (t > 0 and math.isfinite(t)):
        raise PitaInputError(f"--temperature: must be a positive finite number, got {t!r}")
    rung = getattr(args, "rung", None)
    if rung is not None and not 0 <= rung <= 10_000:
        raise PitaInputError(f"--rung: must be in [0, 10000], got {rung!r}")
