"""Training throughput of the default alanine-dipeptide model, and where the time goes.

    python bench/bench_train.py [--device cpu|cuda] [--backbone mlp|transformer|egnn] [--steps 60]

Prints steps per second over the timed steps (after warm-up) and the share of wall time
spent outside the forward + backward passes (batch sampling, clipping + Adam + EMA, loop and
logging), all measured in the same run from the trainer's own timers. Uses the real system
when pita.systems.load("alanine_dipeptide") works, else a stand-in with the same shape
(22 atoms, L = 0.164 nm); the synthetic data (the PDB structure plus 0.01 nm noise, random
energies and forces) do not change the cost of a step.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pita.samples import SampleSet  # noqa: E402
from pita.systems import DATA_DIR, load  # noqa: E402
from pita.systems.base import System  # noqa: E402
from pita.training import train  # noqa: E402


class StandIn(System):
    name = "alanine_dipeptide"
    units = "kJ/mol,nm"
    n_atoms = 22
    length_scale = 0.164


def aldp_system():
    try:
        return load("alanine_dipeptide"), "pita.systems.load('alanine_dipeptide')"
    except Exception as exc:  # noqa: BLE001 - the molecule backend may not be there yet
        return StandIn(), f"stand-in (22 atoms; the real system failed to load: {exc.__class__.__name__})"


def reference_positions() -> np.ndarray:
    pdb = DATA_DIR / "alanine_dipeptide.pdb"
    xyz = [[float(line[30:38]), float(line[38:46]), float(line[46:54])]
           for line in pdb.read_text().splitlines() if line.startswith(("ATOM", "HETATM"))]
    return np.asarray(xyz) / 10.0  # Angstrom -> nm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backbone", default="mlp", choices=["mlp", "transformer", "egnn"])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--n-samples", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)

    system, how = aldp_system()
    rng = np.random.default_rng(0)
    ref = reference_positions()
    n = args.n_samples
    pos = ref[None] + 0.01 * rng.standard_normal((n, system.n_atoms, 3))
    data = SampleSet(positions=pos.astype(np.float32), energy=rng.normal(-300.0, 20.0, n),
                     forces=rng.normal(0.0, 500.0, (n, system.n_atoms, 3)).astype(np.float32),
                     attrs=dict(system=system.name, temperature=1200.0, units=system.units,
                                length_scale=system.length_scale, n_energy_evals=n, n_energy_evals_total=n))

    marks: dict = {}

    def clock(trainer) -> None:
        if trainer.step == args.warmup:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            marks["t0"], marks["timers0"] = time.perf_counter(), dict(trainer.timings)
        if trainer.step == args.warmup + args.steps:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            marks["t1"], marks["timers1"] = time.perf_counter(), dict(trainer.timings)

    config = {"steps": args.warmup + args.steps, "batch_size": args.batch_size, "model": {"backbone": args.backbone}}
    result = train([data], system, config=config, device=args.device, seed=0, callback=clock, progress=False,
                   timing=True)
    wall = marks["t1"] - marks["t0"]
    spent = {k: marks["timers1"][k] - marks["timers0"][k] for k in marks["timers0"]}
    outside = wall - spent["forward_backward"]
    n_params = sum(p.numel() for p in result.model.parameters())
    print(f"system: {how}")
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, backbone {args.backbone} "
          f"{result.model.backbone_options}, {n_params} parameters (score + energy), batch {args.batch_size}")
    print(f"steps/s: {args.steps / wall:.2f}  ({1000 * wall / args.steps:.1f} ms/step over {args.steps} steps)")
    print(f"share of wall time outside forward+backward: {outside / wall:.1%}")
    for k, v in spent.items():
        print(f"  {k:18s} {v / wall:6.1%}  ({1000 * v / args.steps:.2f} ms/step)")
    print(f"  {'loop/logging':18s} {(wall - sum(spent.values())) / wall:6.1%}")


if __name__ == "__main__":
    main()
