"""`pita reference`: the reference sample set at one temperature, for evaluation.

    pita reference --system alanine_dipeptide --temperature 300 --out reference/rung_3.h5
                   [--given data/reference/aldp_300K.h5] [MD settings or --config-json JSON_OR_FILE]

With --given, a shipped or earlier set is checked (system, units, atoms, temperature) and copied;
otherwise MD runs with the settings of config.yaml's reference section. Reference evaluations
are reported apart from the method's.
"""
from __future__ import annotations

import argparse

from . import add_md_run
from .md import check_timestep_option

HELP = "write the reference set at a temperature: a given sample set (checked) or reference MD"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import ReferenceSettings, add_arguments as add_settings

    add_md_run(p)
    p.add_argument("--given", help="existing sample set at this temperature to use instead of running MD")
    add_settings(p, ReferenceSettings)


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..provenance import check_output_path
    from ..settings import ReferenceSettings, from_arguments
    from ..systems import from_argument

    settings = from_arguments(ReferenceSettings, args, section="reference")
    check_output_path(args.out, "--out")
    system = from_argument(args.system)
    check_timestep_option(args, system)
    out = steps.reference(system, args.temperature, settings, given=args.given, seed=args.seed, rung=args.rung or 0,
                          device=args.device, progress=args.progress)
    path = out.write(args.out)
    print(f"pita reference: wrote {len(out)} samples of {out.attrs['system']} at {out.temperature:g} to {path}"
          + (f" (from {args.given})" if args.given else ""))
    return 0
