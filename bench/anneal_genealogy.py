"""One anneal from a checkpoint, and what its weighted set stands for: resamplings, ancestors,
final ESS, and (alanine dipeptide) the basin populations of the weighted and unweighted particles.

    python bench/anneal_genealogy.py --checkpoint results/aldp/rung_0/model.pt \\
        --samples results/aldp/rung_0/samples.h5 --temperature 755.95 \\
        --anneal-json '{"n_particles": 2000, "n_steps": 200, "weights": "ais", "mala_steps": 4}' --seed 1

Prints one JSON line (docs/RESULTS.md, "Why the weights collapse").
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pita import steps
from pita.models import load_checkpoint
from pita.samples import SampleSet
from pita.settings import AnnealSettings, from_mapping
from pita.systems import from_argument


def basin_populations(ss: SampleSet, system, weights: np.ndarray | None) -> list[float] | None:
    """C7eq / alpha_R / alpha_L of a single-residue peptide; None for other systems."""
    import mdtraj as md

    from pita.metrics import basin_labels

    top = getattr(system, "topology", None)
    if top is None or top.n_residues != 3:
        return None
    t = md.Trajectory(np.asarray(ss.positions).reshape(len(ss), -1, 3), top)
    labels = basin_labels(np.stack([md.compute_phi(t)[1][:, 0], md.compute_psi(t)[1][:, 0]], 1))
    w = np.full(len(ss), 1.0 / len(ss)) if weights is None else weights
    return [round(float(w[labels == b].sum()), 3) for b in range(3)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--samples", required=True, help="the rung's samples (for the reweighting ESS)")
    p.add_argument("--temperature", type=float, required=True)
    p.add_argument("--system", default=None, help="default: the checkpoint's")
    p.add_argument("--anneal-json", default="{}")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint)
    system = from_argument(args.system) if args.system else from_argument(model.config["system"]["name"])
    settings = from_mapping(AnnealSettings, json.loads(args.anneal_json), "--anneal-json")
    out, diag = steps.anneal(model, system, args.temperature, settings, checkpoint=args.checkpoint,
                             samples_in=SampleSet.read(args.samples), seed=args.seed)
    report = {"anneal": json.loads(args.anneal_json), "seed": args.seed, "temperature": args.temperature,
              **{k: diag.get(k) for k in ("n_resamples", "n_ancestors", "ess_ancestors", "n_mirrored",
                                          "ess_final_fraction", "ess_reweight_previous_fraction")},
              "ess_path_fraction": diag["ess_path"] / max(len(out), 1),
              "weighted_populations": basin_populations(out, system, out.weights()),
              "unweighted_populations": basin_populations(out, system, None)}
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
