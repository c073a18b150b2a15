"""Where a trained model's heat-equation residual comes from: per sigma band, the sd and robust spread of
tau r over noised frames of a sample set, and the shortest pair distance of the frames furthest from
the median (are the outliers squeezed pairs?) against the set's own shortest distance.

    python bench/heat_residual.py --checkpoint rung_4/model.pt --samples rung_4/samples.h5 --system lj13 \\
        [--frames 512] [--seed 0]

Prints one JSON line per band (docs/RESULTS.md, "What the heat-equation residual's sd measures").
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pita.fidelity import heat_equation_residual, held_out_data
from pita.metrics import pairwise_distances
from pita.models.pita_model import load_checkpoint
from pita.samples import SampleSet
from pita.systems import from_argument


def shortest_pair(x: torch.Tensor, n_atoms: int) -> np.ndarray:
    """(N,) smallest interatomic distance of each flattened frame."""
    return pairwise_distances(x.double().reshape(len(x), n_atoms, 3).numpy()).min(axis=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--samples", required=True)
    p.add_argument("--system", required=True)
    p.add_argument("--frames", type=int, default=512, help="noised frames per band")
    p.add_argument("--outliers", type=int, default=10, help="frames furthest from the median to describe")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    system = from_argument(args.system)
    if system.n_atoms is None:
        raise SystemExit(f"{args.system}: not a molecule (no atoms), no pair distances to describe")
    model = load_checkpoint(args.checkpoint)
    x = held_out_data(SampleSet.read(args.samples), system, model)["x"]
    data_shortest = float(shortest_pair(x, system.n_atoms).min())
    for band in heat_equation_residual(model, x, system.n_atoms, per_band=args.frames, seed=args.seed,
                                       keep_frames=True):
        frames, tau_r = band.pop("x"), band.pop("tau_r").numpy()
        furthest = np.argsort(np.abs(tau_r - np.median(tau_r)))[-args.outliers:]
        dmin = shortest_pair(frames, system.n_atoms)
        band.update(median_tau_r=float(np.median(tau_r)), data_shortest_pair=data_shortest,
                    median_shortest_pair=float(np.median(dmin)),
                    outlier_shortest_pair=sorted(float(v) for v in dmin[furthest]))
        print(json.dumps(band), flush=True)


if __name__ == "__main__":
    main()
