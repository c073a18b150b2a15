"""Batched torch energies + forces vs an OpenMM per-configuration loop (ALDP in implicit solvent).

    python bench/bench_energy.py                       # CPU timing table
    python bench/bench_energy.py --accuracy            # >= 1000-configuration check vs OpenMM Reference
    python bench/bench_energy.py --device cuda --openmm-platform CUDA

For each batch size and dtype it prints configs/s of the torch backend (eager, and compiled
with torch.compile unless --no-compile) and of OpenMM looping a Context over the batch
(for big batches the OpenMM rate is measured on --openmm-configs configurations and
extrapolated: it is a per-configuration loop, so its rate does not depend on the batch).
Rates are the best of --repeats runs by wall clock and, on CPU, also by process CPU time,
which is less sensitive to other jobs sharing the cores; the torch and OpenMM runs of a row
alternate, so the ratio compares them under the same load. torch uses --threads threads
(default 1, the same as OpenMM's Reference platform).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pita.systems import load  # noqa: E402

FORCE_FIELDS = ("alanine_dipeptide", "alanine_dipeptide_amber14")


def md_frames(system, temperature, n, stride=10, seed=0):
    """n positions (n_atoms, 3) nm from OpenMM Langevin MD, after a short burn-in."""
    import openmm as mm
    from openmm import unit

    integ = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond, 0.001 * unit.picoseconds)
    integ.setRandomNumberSeed(seed + 1)
    ctx = mm.Context(system.openmm_system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(system.reference_positions)
    ctx.setVelocitiesToTemperature(temperature * unit.kelvin, seed + 1)
    integ.step(500)
    out = []
    for _ in range(n):
        integ.step(stride)
        out.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(out)


def test_configurations(system, n_md=400, seed=0):
    """MD frames at 300 K and 1200 K, and Gaussian perturbations (0.01 and 0.03 nm) of them."""
    rng = np.random.default_rng(seed)
    x = np.concatenate([md_frames(system, 300.0, n_md, seed=seed), md_frames(system, 1200.0, n_md, seed=seed + 1)])
    return np.concatenate([x, x[::4] + 0.01 * rng.standard_normal(x[::4].shape),
                           x[1::4] + 0.03 * rng.standard_normal(x[1::4].shape)])


def relative_errors(e, f, e_ref, f_ref):
    e, f = np.asarray(e, np.float64), np.asarray(f, np.float64)
    de = np.abs(e - e_ref) / np.abs(e_ref)
    df = np.linalg.norm((f - f_ref).reshape(len(f), -1), axis=1) / np.linalg.norm(f_ref.reshape(len(f), -1), axis=1)
    return de.max(), df.max()


def accuracy(args):
    print(f"{'system':28s} {'forcefield':36s} {'n':>5s} {'dtype':8s} {'max rel dE':>11s} {'max rel dF':>11s}")
    for name in FORCE_FIELDS:
        system = load(name)
        x = test_configurations(system, n_md=args.n_md)
        e_ref, f_ref = system.openmm_evaluator("Reference").evaluate(x)
        for dtype in (torch.float64, torch.float32):
            e, f = system.energy_and_forces(torch.as_tensor(x, dtype=dtype, device=args.device))
            de, df = relative_errors(e.cpu(), f.cpu(), e_ref, f_ref)
            print(f"{name:28s} {'+'.join(system.forcefield):36s} {len(x):5d} {str(dtype)[6:]:8s} {de:11.2e} {df:11.2e}")


class Timer:
    """Best-of-n wall and process-CPU seconds of fn()."""

    def __init__(self, fn, repeats=0, sync=None):
        self.fn, self.sync = fn, sync
        self.wall, self.cpu = float("inf"), float("inf")
        for _ in range(repeats):
            self.run()

    def run(self):
        if self.sync:
            self.sync()
        w, c = time.perf_counter(), time.process_time()
        self.fn()
        if self.sync:
            self.sync()
        self.wall = min(self.wall, time.perf_counter() - w)
        self.cpu = min(self.cpu, time.process_time() - c)


def interleaved(timers, repeats):
    """Run the timers in turn, `repeats` rounds: on a shared machine the load then changes
    under all of them alike, so their ratios are fair even when the absolute rates drift."""
    for _ in range(repeats):
        for t in timers:
            t.run()
    return timers


def timing(args):
    torch.set_num_threads(args.threads)
    system = load(args.system)
    rng = np.random.default_rng(0)
    base = md_frames(system, 300.0, 256)
    omm = system.openmm_evaluator(args.openmm_platform)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else None
    def openmm_timer(batch):
        xo = base[rng.integers(0, len(base), min(batch, args.openmm_configs))]
        return Timer(lambda: omm.evaluate(xo)), len(xo)

    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    print(f"# {args.system}: {system.n_atoms} atoms, forcefield {'+'.join(system.forcefield)}; device {args.device}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); OpenMM {args.openmm_platform} platform")
    print(f"{'batch':>6s} {'dtype':8s} {'mode':9s} {'torch/s':>10s} {'openmm/s':>10s} {'ratio':>7s}"
          f" {'torch/s cpu':>12s} {'openmm/s cpu':>13s} {'ratio cpu':>9s}")
    for dtype in args.dtypes:
        dt = getattr(torch, dtype)
        for mode in modes:
            ff = system.torch_forcefield
            ff.compile = mode == "compiled"
            ff.chunk_size = args.chunk_size
            ff._compiled_fn = None
            warm = time.perf_counter()
            ff.energy_and_forces(torch.as_tensor(base[:args.chunk_size or 1024], dtype=dt, device=args.device))
            ff.energy_and_forces(torch.as_tensor(base[:1], dtype=dt, device=args.device))
            if mode == "compiled":
                print(f"# torch.compile warm-up ({dtype}): {time.perf_counter() - warm:.1f} s")
            for batch in args.batches:
                x = base[rng.integers(0, len(base), batch)] + 0.005 * rng.standard_normal((batch, system.n_atoms, 3))
                xt = torch.as_tensor(x, dtype=dt, device=args.device)
                t = Timer(lambda: ff.energy_and_forces(xt), sync=sync)
                o, n_omm = openmm_timer(batch)
                interleaved([t, o], args.repeats)
                ow, oc = n_omm / o.wall, n_omm / o.cpu
                tw, tc = batch / t.wall, batch / t.cpu
                cpu_cols = f" {tc:12.0f} {oc:13.0f} {tc / oc:9.2f}" if not cuda else ""
                print(f"{batch:6d} {dtype:8s} {mode:9s} {tw:10.0f} {ow:10.0f} {tw / ow:7.2f}{cpu_cols}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", default="alanine_dipeptide")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 256, 4096, 65536])
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="configurations per kernel call (torch force field chunk_size; default 1024 on CPU, 65536 on CUDA)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    p.add_argument("--openmm-platform", default="Reference")
    p.add_argument("--openmm-configs", type=int, default=2000, help="configurations timed for the OpenMM loop")
    p.add_argument("--accuracy", action="store_true", help="run the >= 1000-configuration check instead")
    p.add_argument("--n-md", type=int, default=400, help="MD frames per temperature for --accuracy")
    args = p.parse_args(argv)
    accuracy(args) if args.accuracy else timing(args)


if __name__ == "__main__":
    main()
