"""`pita export`: write a sample set as a trajectory for VMD / PyMOL.

    pita export --samples rung_3/samples.h5 --out rung_3.dcd          # rung_3.dcd + rung_3.pdb
    pita export --samples rung_3/samples.h5 --out rung_3.pdb          # multi-model PDB
    pita export --samples anneal.h5 --out a.dcd --resample 1000       # equal-weight frames

Any format mdtraj writes by extension (.dcd, .xtc, .pdb, .h5, ...); for formats without a
topology a PDB of the first frame is written beside the trajectory (or at --pdb). The topology
comes from the system (--system, default the set's 'system' attribute); particle systems without
one (Lennard-Jones) get one atom per particle (element Ar, residue LJ), coordinates written as
they are (reduced units read as nm). Weighted sets are exported frame by frame unless
--resample N draws N frames by systematic resampling of the weights.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

HELP = "export a sample set to DCD+PDB, PDB or another mdtraj format for VMD/PyMOL"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", required=True, help="sample set (HDF5)")
    p.add_argument("--out", required=True, help="output trajectory; format from the extension (.dcd, .pdb, .xtc, ...)")
    p.add_argument("--pdb", default=None, help="topology PDB for non-PDB formats (default: OUT with .pdb)")
    p.add_argument("--system", default=None, help="system name for the topology (default: the set's 'system' attribute)")
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


def systematic_indices(weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return np.searchsorted(cdf, (rng.random() + np.arange(n)) / n, side="right")


def _topology(args: argparse.Namespace, samples):
    from ..errors import PitaInputError
    from ..systems import load

    spec = args.system if args.system is not None else samples.attrs.get("system")
    top = None
    if spec is not None:
        try:
            system = load(spec)
            top = getattr(system, "topology", None)
            if args.system is not None and system.n_atoms != samples.n_atoms:
                raise PitaInputError(f"{args.samples}: {samples.n_atoms} atoms per sample but system "
                                     f"{system.name} has {system.n_atoms}")
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

    from ..errors import PitaInputError
    from ..provenance import atomic_path, check_output_path
    from ..samples import SampleSet

    check_output_path(args.out, "--out")
    check_output_path(args.pdb, "--pdb")
    samples = SampleSet.read(args.samples, load_forces=False)
    if samples.n_atoms is None:
        raise PitaInputError(f"{args.samples}: positions are not particles (shape {list(samples.positions.shape)}); "
                             "nothing to export as a trajectory")
    if args.stride < 1:
        raise PitaInputError("--stride: must be >= 1")
    if args.max_frames is not None and args.max_frames < 1:
        raise PitaInputError(f"--max-frames: must be >= 1, got {args.max_frames}")
    idx = np.arange(len(samples))
    if args.resample is not None:
        if args.resample < 1:
            raise PitaInputError("--resample: must be >= 1")
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
    out = Path(args.out)
    ext = "".join(out.suffixes[-1:]).lower()
    savers = traj._savers() if hasattr(traj, "_savers") else None  # mdtraj's extension -> writer table
    if ext and savers is not None and not any(out.name.lower().endswith(k) for k in savers):
        raise PitaInputError(f"--out {out}: unknown trajectory format {ext!r}; use one of .dcd, .xtc, .pdb, .h5, .nc")
    with atomic_path(out, suffix=ext or ".dcd") as tmp:
        traj.save(str(tmp))
    log.info("wrote %s (%d frames)", out, traj.n_frames)
    if ext != ".pdb":
        pdb = Path(args.pdb) if args.pdb else out.with_suffix(".pdb")
        with atomic_path(pdb, suffix=".pdb") as tmp:
            traj[0].save_pdb(str(tmp))
        log.info("wrote %s (topology, first frame)", pdb)
    return 0
