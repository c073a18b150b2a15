"""Per-basin model fidelity (alanine dipeptide): how well a rung's model describes each
Ramachandran basin at the next temperature, and what an annealed set holds in each basin.

    python bench/basin_fidelity.py --checkpoint results/aldp/rung_2/model.pt \\
        --reference results/aldp/reference/rung_3.h5 --temperature 300 \\
        [--weighted results/aldp/rung_3/weighted.h5]

On reference frames: d = gamma E(x, sigma_min) - U/kT (the final correction's log-weight of a
perfect sample), its mean per basin relative to C7eq's (the model's basin free-energy error: a
positive offset means the model under-weights that basin by e^offset) and its sd within the basin
(which sets the ESS there). With --weighted: per basin the particle count, the distinct ancestors,
the median U/kT against the reference's, the median log-weight offset of the annealed particles
(same d, same C7eq origin: strongly negative where the model rates its own particles far better
than the true energy does) and the weighted population. Prints one JSON line
(docs/RESULTS.md, "Seeds, lineages and honest errors").
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pita.metrics import BASIN_NAMES, backbone_dihedrals, basin_labels
from pita.models import load_checkpoint
from pita.relax import model_potential
from pita.samples import SampleSet
from pita.systems import from_argument


def labels_of(ss: SampleSet, topology) -> np.ndarray:
    """C7eq / alpha_R / alpha_L label (0 / 1 / 2) of every frame (first residue)."""
    return basin_labels(backbone_dihedrals(ss.positions, topology)[0][:, 0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--reference", required=True, help="reference frames at --temperature")
    p.add_argument("--temperature", type=float, required=True)
    p.add_argument("--weighted", default=None, help="an annealed (weighted) set at --temperature")
    p.add_argument("--max-frames", type=int, default=3000, help="reference frames the model is evaluated on")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_checkpoint(args.checkpoint)
    system = from_argument(model.config["system"]["name"])
    kT = system.kT(args.temperature)
    full = SampleSet.read(args.reference)
    full_lab = labels_of(full, system.topology)
    pick = np.sort(np.random.default_rng(0).choice(len(full), size=min(args.max_frames, len(full)), replace=False))
    ref = full.subset(pick)
    gamma = float(model.temperature) / args.temperature
    phi0 = model_potential(model, gamma, float(model.sigma_min), float(model.length_scale),
                           model.n_atoms if model.mean_free else None, 1000)
    d = phi0(torch.as_tensor(ref.positions, dtype=torch.float32))[0].numpy() - ref.energy / kT
    lab = labels_of(ref, system.topology)
    d0 = d - float(np.mean(d[lab == 0]))
    out: dict = {"checkpoint": args.checkpoint, "gamma": round(gamma, 4), "log_weight_sd": round(float(np.std(d)), 3)}
    for b, name in enumerate(BASIN_NAMES):
        m = lab == b
        out[name] = {"n_reference": int(m.sum()), "offset": round(float(np.mean(d0[m])), 3) if m.any() else None,
                     "sd": round(float(np.std(d0[m])), 3) if m.any() else None,
                     "median_U_kT_reference": (round(float(np.median(full.energy[full_lab == b])) / kT, 2)
                                               if (full_lab == b).any() else None)}
    if args.weighted:
        ws = SampleSet.read(args.weighted)
        lw = ws.weights()
        lw_lab = labels_of(ws, system.topology)
        anc = ws.lineage()
        # the same log-weight on the annealed particles, against the reference's C7eq mean: a strongly
        # negative value means the model rates these configurations far better than the true energy does
        d_ann = phi0(torch.as_tensor(ws.positions, dtype=torch.float32))[0].numpy() - ws.energy / kT
        d_ann -= float(np.mean(d[lab == 0]))
        for b, name in enumerate(BASIN_NAMES):
            m = lw_lab == b
            out[name].update(n_annealed=int(m.sum()), population=round(float(lw[m].sum()), 4),
                             ancestors=int(np.unique(anc[m]).size) if anc is not None and m.any() else None,
                             median_U_kT_annealed=round(float(np.median(ws.energy[m])) / kT, 2) if m.any() else None,
                             median_offset_annealed=round(float(np.median(d_ann[m])), 2) if m.any() else None)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
