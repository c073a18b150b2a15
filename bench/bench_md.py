#!/usr/bin/env python
"""MD throughput: batched torch Langevin (replica-steps/s) against one OpenMM trajectory (steps/s).

Alanine dipeptide, amber99sb-ildn + OBC implicit solvent, no constraints, 1 fs, 300 K.

    python bench/bench_md.py                          # CPU: OpenMM Reference vs torch, 1..256 replicas
    python bench/bench_md.py --device cuda            # OpenMM CUDA vs torch on the GPU, up to 16384 replicas
    python bench/bench_md.py --replicas 64 512 --steps 200
    python bench/bench_md.py --validate               # engines agree at 300 K and 1200 K? (figures)

Targets: ratio >= 1 on CPU (many replicas), >= 100 on an H100.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pita import md  # noqa: E402


def load_aldp():
    """pita.systems.load("alanine_dipeptide"); before MolecularSystem existed, a minimal stand-in
    on TorchForceField (same OpenMM System: amber99sbildn + amber99_obc, NoCutoff, no constraints)."""
    from pita.systems import load

    try:
        return load("alanine_dipeptide")
    except ModuleNotFoundError as exc:
        if exc.name != "pita.systems.molecule":
            raise
    import openmm.app as app
    import openmm.unit as u

    from pita.systems import DATA_DIR
    from pita.systems.base import KB_MOLECULAR, System
    from pita.systems.torch_forcefield import TorchForceField

    class StandIn(System):
        units, kB, length_scale, name, backend = "kJ/mol,nm", KB_MOLECULAR, 0.164, "alanine_dipeptide", "torch"

        def __init__(self):
            super().__init__()
            pdb = app.PDBFile(str(DATA_DIR / "alanine_dipeptide.pdb"))
            ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
            self.openmm_system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
            self.reference_positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
            self.n_atoms = self.openmm_system.getNumParticles()
            self._masses = np.array([self.openmm_system.getParticleMass(i).value_in_unit(u.dalton)
                                     for i in range(self.n_atoms)])
            self.ff = TorchForceField.from_openmm(self.openmm_system)

        @property
        def masses(self):
            return self._masses

        def _energy(self, x):
            return self.ff.energy(x)

        def _energy_and_forces(self, x):
            return self.ff.energy_and_forces(x)

    print("(MolecularSystem not available: using a TorchForceField stand-in)")
    return StandIn()


def openmm_runner(system, platform: str, device):
    """(run(steps) -> steps/s of one OpenMM trajectory, platform name), after a warm-up."""
    import openmm
    import openmm.unit as u

    plat, props = md._openmm_platform(platform, device)
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 1 / u.picosecond, 0.001 * u.picosecond)
    integ.setRandomNumberSeed(1)
    ctx = openmm.Context(system.openmm_system, integ, plat, props)
    ctx.setPositions(np.asarray(system.reference_positions) * u.nanometer)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 2)
    integ.step(100)  # warm-up
    ctx.getState(getEnergy=True)

    def run(steps: int) -> float:
        t = time.perf_counter()
        integ.step(steps)
        ctx.getState(getEnergy=True)  # synchronise (GPU)
        return steps / (time.perf_counter() - t)

    return run, plat.getName()


def torch_runner(system, replicas: int, device: torch.device, dtype: torch.dtype,
                 eval_dtype: torch.dtype | None = None):
    """run(steps) -> replica-steps/s of the batched torch integrator, after a warm-up."""
    x = torch.as_tensor(np.asarray(system.reference_positions), dtype=dtype, device=device)
    x = x.expand(replicas, -1, -1).clone()
    gen = torch.Generator(device=device).manual_seed(0)
    integ = md.BatchedLangevin(system, 300.0, 0.001, 1.0, generator=gen, device=device, dtype=dtype,
                               eval_dtype=eval_dtype)
    integ.initialize(x)
    integ.step(3)  # warm-up

    def run(steps: int) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        integ.step(steps)
        if device.type == "cuda":
            torch.cuda.synchronize()
        el = time.perf_counter() - t
        if not torch.isfinite(integ.energy).all():
            raise RuntimeError("torch integration blew up in the benchmark")
        return replicas * steps / el

    return run


def validate(args) -> dict:
    system = load_aldp()
    rows = {}
    for T in args.temperatures:
        common = dict(stride_steps=args.stride, equilibration_steps=args.equilibration, friction=1.0,
                      progress=False, device=args.device)
        t0 = time.perf_counter()
        a = md.run_md(system, T, args.n_samples, engine="openmm", replicas=args.trajectories, seed=5,
                      platform=args.platform, **common)
        t1 = time.perf_counter()
        b = md.run_md(system, T, args.n_samples, engine="torch", replicas=args.validate_replicas, seed=5, **common)
        t2 = time.perf_counter()
        c = md.compare_energy_distributions(a, b)
        rows[T] = c
        print(f"T = {T:g} K  ({args.n_samples} samples each, stride {args.stride} steps; openmm {t1 - t0:.0f} s, "
              f"torch {t2 - t1:.0f} s)")
        for name, s in (("openmm", c["a"]), ("torch ", c["b"])):
            print(f"  {name} <U> = {s['mean']:9.3f} +- {s['se']:.3f} kJ/mol   std {s['std']:.2f}   "
                  f"g {s['g']:.1f}   independent {s['n_independent']}")
        print(f"  difference {c['diff']:+.3f} +- {c['se']:.3f} (z = {c['z']:+.2f}); "
              f"KS D = {c['ks_statistic']:.3f}, p = {c['ks_pvalue']:.3f}")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch engine; OpenMM uses CUDA too)")
    p.add_argument("--platform", default="auto", help="OpenMM platform (auto: CUDA on cuda, else Reference)")
    p.add_argument("--replicas", type=int, nargs="+", help="replica counts for the torch engine")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement")
    p.add_argument("--precision", choices=list(md.PRECISIONS), default="mixed",
                   help="torch engine precision (default mixed: float64 state, float32 forces, as run_md)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="configurations per force-field kernel call (default: the system's, 1024); "
                        "on a GPU the rate is launch-bound below ~65536")
    p.add_argument("--repeats", type=int, default=3, help="alternating OpenMM/torch measurements per row (best kept)")
    p.add_argument("--json", help="write the figures to this JSON file")
    p.add_argument("--validate", action="store_true", help="compare the engines' energy distributions instead")
    p.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 1200.0])
    p.add_argument("--n-samples", type=int, default=2000)
    p.add_argument("--stride", type=int, default=200)
    p.add_argument("--equilibration", type=int, default=5000)
    p.add_argument("--trajectories", type=int, default=2)
    p.add_argument("--validate-replicas", type=int, default=100)
    args = p.parse_args(argv)
    device = md.resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.validate:
        rows = validate(args)
        if args.json:
            Path(args.json).write_text(json.dumps({str(k): v for k, v in rows.items()}, indent=1))
        return 0
    dtype, eval_dtype = md.PRECISIONS[args.precision]
    replicas = args.replicas or ([1, 16, 64, 256, 1024] if device.type == "cpu" else [1, 256, 1024, 4096, 16384, 65536])
    steps = args.steps or (300 if device.type == "cpu" else 200)
    system = load_aldp()
    if args.chunk_size:
        ff = getattr(system, "torch_forcefield", None) or getattr(system, "ff", None)
        ff.chunk_size = int(args.chunk_size)
    chunk = getattr(getattr(system, "torch_forcefield", None) or getattr(system, "ff", None), "chunk_size", None)
    print(f"alanine dipeptide ({system.n_atoms} atoms, implicit solvent), 300 K, dt 1 fs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}, {args.precision} precision, force-field chunk {chunk}")
    omm_steps = steps * (10 if device.type == "cpu" else 50)
    omm_run, plat = openmm_runner(system, args.platform, device)
    print(f"OpenMM {plat}: one trajectory, {omm_steps} steps per measurement; torch {steps} steps; "
          f"best of {args.repeats}, the two alternating (same load for both)")
    results = {"openmm_platform": plat, "openmm_steps_per_s": {}, "device": str(device),
               "precision": args.precision, "threads": torch.get_num_threads(), "torch": {}, "ratio": {}}
    print(f"{'replicas':>9} {'replica-steps/s':>16} {'OpenMM steps/s':>15} {'ratio vs OpenMM':>16}")
    for r in replicas:
        try:
            torch_run = torch_runner(system, r, device, dtype, eval_dtype)
            rate = omm_rate = 0.0
            for _ in range(args.repeats):
                omm_rate = max(omm_rate, omm_run(omm_steps))
                rate = max(rate, torch_run(steps))
        except torch.OutOfMemoryError:
            print(f"{r:>9} {'out of memory':>16}")
            break
        results["torch"][r], results["openmm_steps_per_s"][r] = rate, omm_rate
        results["ratio"][r] = rate / omm_rate
        print(f"{r:>9} {rate:>16,.0f} {omm_rate:>15,.0f} {rate / omm_rate:>15.2f}x", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    print(f"best ratio: {max(results['ratio'].values()):.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
