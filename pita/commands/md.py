"""`pita md`: decorrelated MD samples (with energies and forces) at one temperature.

    pita md --system alanine_dipeptide --temperature 1200 --n-samples 1000 --out seed.h5
            [MD settings: --replicas, --stride-steps, --timestep-fs, ... or --config-json JSON_OR_FILE]

The settings are those of config.yaml's md_seed section (pita.settings.MDSettings); options given
on the command line win over --config-json.
"""
from __future__ import annotations

import argparse
import logging

from . import add_md_run
from ..errors import PitaInputError

HELP = "run Langevin MD (OpenMM or batched torch) and write decorrelated samples with energies and forces"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import MDSettings, add_arguments as add_settings

    add_md_run(p)
    p.add_argument("--start", help="sample set whose configurations start the runs (default: the reference structure)")
    add_settings(p, MDSettings)


def check_timestep_option(args: argparse.Namespace, system) -> None:
    """--timestep-fs is for molecules only; reduced-unit systems take --timestep."""
    from ..md import is_molecular

    if getattr(args, "timestep_fs", None) is not None and not is_molecular(system):
        raise PitaInputError(f"--timestep-fs: system {system.name!r} uses reduced units; give --timestep instead")


def run(args: argparse.Namespace) -> int:
    from .. import steps
    from ..provenance import check_output_path
    from ..samples import SampleSet
    from ..settings import MDSettings, from_arguments
    from ..systems import from_argument

    settings = from_arguments(MDSettings, args)
    check_output_path(args.out, "--out")
    system = from_argument(args.system)
    check_timestep_option(args, system)
    start = None
    if args.start:
        start = SampleSet.read(args.start, load_forces=False)
        start.check_system(args.start, system)
    out = steps.seed(system, args.temperature, settings, seed=args.seed, rung=args.rung or 0, start=start,
                     device=args.device, progress=args.progress)
    path = out.write(args.out)
    a = out.attrs
    print(f"pita md: wrote {len(out)} samples of {a['system']} at {a['temperature']:g} to {path} "
          f"(engine {a['md_engine']}, {a['n_energy_evals']} energy evaluations, "
          f"mean energy {out.energy.mean():.4g} +- {out.energy.std() / max(1, len(out)) ** 0.5:.2g})")
    return 0
