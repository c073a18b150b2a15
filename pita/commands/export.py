"""`pita export`: write a sample set as a trajectory for VMD / PyMOL.

    pita export --samples rung_3/samples.h5 --out rung_3.dcd          # rung_3.dcd + rung_3.pdb
    pita export --samples rung_3/samples.h5 --out rung_3.pdb          # multi-model PDB
    pita export --samples anneal.h5 --out a.dcd --resample 1000       # equal-weight frames
    pita export --samples s.h5 --out s.dcd s.xtc --pdb s.topology.pdb  # several formats, one topology

The format comes from the extension of each --out, one of `FORMATS` (written with mdtraj's
public `Trajectory.save_<format>` methods): .dcd, .xtc, .trr, .nc/.netcdf/.ncdf (AMBER NetCDF),
.xyz, .mdcrd/.crd, .pdb, .pdb.gz, .gro, and .h5 (mdtraj HDF5, only where PyTables is installed).
A PDB of the first frame (the topology) is written at --pdb, or, when --pdb is not given and
a format has no topology, beside the first such trajectory (OUT with .pdb). The topology comes
from the system (--system: a name or a JSON spec, default the set's 'system' attribute);
particle systems without one (Lennard-Jones) get one atom per particle (element Ar, residue
LJ), coordinates written as they are (reduced units read as nm); a density in R^d (gmm) has no
particles and is refused. Weighted sets are exported frame by frame unless --resample N draws N
frames by systematic resampling of the weights. Every output path is checked before anything
is read, and each file is written atomically.
"""
from __future__ import annotations

import argparse
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PitaInputError
from ..weights import systematic_indices  # noqa: F401  (kept importable here: export.systematic_indices)

HELP = "export a sample set to DCD+PDB, PDB or another mdtraj format for VMD/PyMOL"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Format:
    #: public mdtraj.Trajectory method that writes it
    method: str
    #: True when the file holds the topology itself (no PDB beside it)
    has_topology: bool
    #: Python module the writer needs beyond mdtraj's own, or None
    needs: str | None = None


#: extension (lower case) -> writer; each one is round-tripped through mdtraj.load in the tests
FORMATS: dict[str, Format] = {
    ".dcd": Format("save_dcd", False),
    ".xtc": Format("save_xtc", False),
    ".trr": Format("save_trr", False),
    ".nc": Format("save_netcdf", False),
    ".netcdf": Format("save_netcdf", False),
    ".ncdf": Format("save_netcdf", False),
    ".xyz": Format("save_xyz", False),
    ".mdcrd": Format("save_mdcrd", False),
    ".crd": Format("save_mdcrd", False),
    ".pdb": Format("save_pdb", True),
    ".pdb.gz": Format("save_pdb", True),
    ".gro": Format("save_gro", True),
    ".h5": Format("save_hdf5", True, needs="tables"),
}


def _available(fmt: Format) -> bool:
    return fmt.needs is None or importlib.util.find_spec(fmt.needs) is not None


def supported_extensions() -> list[str]:
    """Extensions that can be written with the packages installed here."""
    return [ext for ext, fmt in FORMATS.items() if _available(fmt)]


def output_format(out: str | Path, option: str = "--out") -> tuple[str, Format]:
    """(extension, Format) of an output path; PitaInputError for an unknown or unavailable format."""
    name = Path(out).name.lower()
    matches = [ext for ext in FORMATS if name.endswith(ext) and len(name) > len(ext)]
    supported = ", ".join(supported_extensions())
    if not matches:
        ext = "".join(Path(name).suffixes[-1:])
        raise PitaInputError(f"{option} {out}: unknown trajectory format {ext!r}; use one of {supported}")
    ext = max(matches, key=len)  # .pdb.gz before .gz
    fmt = FORMATS[ext]
    if not _available(fmt):
        raise PitaInputError(f"{option} {out}: format {ext!r} needs the Python package {fmt.needs!r} "
                             f"(PyTables), which is not installed; use one of {supported}")
    return ext, fmt


def save_trajectory(traj, path: str | Path, fmt: Format) -> None:
    """Write `traj` with mdtraj's public writer `fmt.method` at `path` (which must have the format's extension)."""
    with warnings.catch_warnings():
        # mdtraj warns on every NetCDF write that it falls back to scipy without netCDF4
        warnings.filterwarnings("ignore", message=".*netCDF4.*", category=UserWarning)
        getattr(traj, fmt.method)(str(path), force_overwrite=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="sample set (HDF5)")
    p.add_argument("--out", required=True, nargs="+",
                   help=f"output trajectory (or several); format from the extension ({', '.join(FORMATS)})")
    p.add_argument("--pdb", default=None, help="topology PDB (first frame); default: written only for formats without "
                                               "a topology, as the first such OUT with .pdb")
    p.add_argument("--system", default=None, help="system name or JSON spec for the topology (default: the set's "
                                                  "'system' attribute)")
    p.add_argument("--resample", type=int, default=None, metavar="N",
                   help="export N frames drawn by systematic resampling of the importance weights")
    p.add_argument("--stride", type=int, default=1, help="keep every k-th frame")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames (the first ones)")
    p.add_argument("--superpose", action="store_true", help="align all frames onto the first (heavy atoms)")
    p.add_argument("--seed", type=int, default=0, help="seed for --resample")


def particle_topology(n_atoms: int):
    """mdtraj Topology of n unbonded particles (element Ar, one residue LJ each)."""
    import mdtraj as md

    top = md.Topology()
    chain = top.add_chain()
    for i in range(n_atoms):
        res = top.add_residue("LJ", chain, resSeq=i + 1)
        top.add_atom("Ar", md.element.argon, res)
    return top


def _topology(args: argparse.Namespace, samples):
    from ..systems import from_argument

    spec = args.system if args.system is not None else samples.attrs.get("system")
    top = None
    if spec is not None:
        try:
            system = from_argument(spec)
            top = getattr(system, "topology", None)
            if args.system is not None:
                if system.n_atoms != samples.n_atoms:
                    raise PitaInputError(f"{args.samples}: {samples.n_atoms} atoms per sample but system "
                                         f"{system.name} has {system.n_atoms}")
                samples.check_system(str(args.samples), system, option="--system")
        except PitaInputError:
            if args.system is not None:
                raise
            log.warning("%s: unknown system %r; exporting bare particles", args.samples, spec)
    if top is None:
        top = particle_topology(samples.n_atoms)
    if top.n_atoms != samples.n_atoms:
        raise PitaInputError(f"{args.samples}: {samples.n_atoms} atoms per sample but the topology has {top.n_atoms}")
    return top


def run(args: argparse.Namespace) -> int:
    import mdtraj as md

    from ..provenance import atomic_path, check_output_path
    from ..samples import SampleSet

    # every output path and option first: nothing is read or written before they are all fine
    outs = [Path(o) for o in (args.out if isinstance(args.out, (list, tuple)) else [args.out])]
    formats = [output_format(o) for o in outs]
    without_top = [(o, ext) for o, (ext, fmt) in zip(outs, formats) if not fmt.has_topology]
    pdb = Path(args.pdb) if args.pdb else (
        without_top[0][0].with_name(without_top[0][0].name[:-len(without_top[0][1])] + ".pdb") if without_top else None)
    pdb_ext = None
    if pdb is not None:
        pdb_ext, pdb_fmt = output_format(pdb, "--pdb")
        if pdb_fmt.method != "save_pdb":
            raise PitaInputError(f"--pdb {pdb}: the topology file must end in .pdb or .pdb.gz")
    for o in outs:
        check_output_path(o, "--out")
    check_output_path(pdb, "--pdb")
    seen: dict[Path, str] = {}
    for option, path in [*(("--out", o) for o in outs), *((("--pdb", pdb),) if pdb is not None else ())]:
        key = path.resolve()
        if key in seen:
            raise PitaInputError(f"{option} {path}: the same file as {seen[key]} {path}")
        seen[key] = option
    if args.stride < 1:
        raise PitaInputError("--stride: must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise PitaInputError(f"--max-frames: must be >= 1, got {args.max_frames}")
    if args.resample is not None and args.resample < 1:
        raise PitaInputError("--resample: must be >= 1")
    samples = SampleSet.read(args.samples, load_forces=False)
    if samples.n_atoms is None:
        raise PitaInputError(f"{args.samples}: positions are not particles (shape {list(samples.positions.shape)}); "
                             "nothing to export as a trajectory")
    idx = np.arange(len(samples))
    if args.resample is not None:
        idx = systematic_indices(samples.weights(), args.resample, np.random.default_rng(args.seed))
    elif samples.log_weight is not None:
        log.warning("%s is weighted (ESS %.1f of %d); exporting all frames unweighted, use --resample N for "
                    "equal-weight frames", args.samples, samples.ess(), len(samples))
    idx = idx[::args.stride]
    if args.max_frames is not None:
        idx = idx[:args.max_frames]
    top = _topology(args, samples)
    traj = md.Trajectory(samples.positions[idx].astype(np.float32), top)
    if args.superpose and traj.n_frames > 1:
        heavy = [a.index for a in top.atoms if a.element is None or a.element.symbol != "H"]
        traj.superpose(traj, 0, atom_indices=heavy or None)
    for out, (ext, fmt) in zip(outs, formats):
        with atomic_path(out, suffix=ext) as tmp:
            save_trajectory(traj, tmp, fmt)
        log.info("wrote %s (%d frames)", out, traj.n_frames)
    if pdb is not None:
        with atomic_path(pdb, suffix=pdb_ext) as tmp:
            save_trajectory(traj[0], tmp, FORMATS[".pdb"])
        log.info("wrote %s (topology, first frame)", pdb)
    return 0
