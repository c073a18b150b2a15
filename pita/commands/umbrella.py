"""`pita umbrella`: basin free energies at one temperature from umbrella sampling + MBAR.

    pita umbrella --system alanine_dipeptide --temperature 300 --seed 1 --out windows_1.h5 \
                  [--windows 36 --psi-windows 12 --force-constant 200 ... or --config-json JSON_OR_FILE]
    pita umbrella --combine windows_1.h5 windows_2.h5 ... --out aldp_300K_basins.json

The first form samples the restrained windows (OpenMM) and writes them; the second unbiases one or
more independent repeats together with MBAR and writes the basin free energies (relative to C7eq)
with two errors: MBAR's asymptotic one and, with two or more repeats, the spread of the repeats'
own estimates (sd / sqrt(repeats)). The reported `se` is the larger. `pita evaluate
--basin-reference FILE` compares a sample set's basin free energies with it.
"""
from __future__ import annotations

import argparse
import dataclasses

from . import add_progress, add_seed, add_system, positive_float

HELP = "basin free energies from umbrella sampling on the (phi, psi) grid with MBAR (a basin reference)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import add_arguments as add_settings
    from ..umbrella import UmbrellaSettings

    add_system(p, required=False, help="system to sample (not with --combine)")
    p.add_argument("--temperature", type=positive_float, help="temperature (K) (not with --combine)")
    p.add_argument("--combine", nargs="+", metavar="WINDOWS_H5",
                   help="window files of independent repeats (same system, temperature and residue) to unbias "
                        "together; --out is then the basin free energies (.json)")
    p.add_argument("--out", required=True, help="window samples (.h5), or with --combine the basin free energies "
                                                "(.json); written atomically")
    add_seed(p)
    add_progress(p)
    add_settings(p, UmbrellaSettings)


def run(args: argparse.Namespace) -> int:
    from ..errors import PitaInputError
    from ..provenance import check_output_path
    from ..settings import check_seed, from_arguments
    from ..umbrella import UmbrellaSettings, basin_reference, read_windows, sample_backbone_windows, write_windows

    check_output_path(args.out, "--out")
    if args.combine:
        if args.system is not None or args.temperature is not None:
            raise PitaInputError("--system/--temperature: not used with --combine (the window files name their "
                                 "system and temperature)")
        given = [f.name for f in dataclasses.fields(UmbrellaSettings) if getattr(args, f.name, None) is not None]
        if given or args.config_json:
            raise PitaInputError(f"--{(given[0] if given else 'config_json').replace('_', '-')}: sampling settings "
                                 "are not used with --combine (the window files record theirs)")
        if not str(args.out).lower().endswith(".json"):
            raise PitaInputError(f"--out: with --combine the output is a .json file, got {args.out!r}")
        runs = [read_windows(path) for path in args.combine]
        out = basin_reference(runs, list(args.combine), args.out)
        names = [k for k in out["basins"] if k != "C7eq"]
        print("pita umbrella: " + ", ".join(
            f"dF {b} = {out['basins'][b]['dF']:.3f} +- {out['basins'][b]['se']:.3f} kT" for b in names)
            + f" from {len(runs)} repeat(s); wrote {args.out}")
        return 0
    if args.system is None:
        raise PitaInputError("--system: required (unless --combine)")
    if args.temperature is None:
        raise PitaInputError("--temperature: required (unless --combine)")
    if not str(args.out).lower().endswith((".h5", ".hdf5")):
        raise PitaInputError(f"--out: the window samples are an HDF5 file (.h5), got {args.out!r}")
    from ..systems import from_argument

    settings = from_arguments(UmbrellaSettings, args, section="umbrella")
    seed = 0 if args.seed is None else check_seed(args.seed)
    system = from_argument(args.system)
    if not hasattr(system, "openmm_system") or not hasattr(system, "topology"):
        raise PitaInputError(f"--system: {system.name} is not a molecule with an OpenMM system; umbrella sampling "
                             "along phi needs one")
    windows = sample_backbone_windows(system, args.temperature, settings, seed=seed, progress=args.progress)
    write_windows(args.out, windows, system, settings, seed)
    print(f"pita umbrella: {windows.centres.shape[0]} windows x {settings.frames_per_window} frames of {system.name} at "
          f"{args.temperature:g} K in {windows.wall_s:.0f} s ({windows.n_energy_evals} energy evaluations); "
          f"wrote {args.out}")
    return 0
