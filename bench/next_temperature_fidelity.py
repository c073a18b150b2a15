"""How well a rung's model describes the NEXT temperature: the final correction's log-weight on
reference frames there.

    python bench/next_temperature_fidelity.py --checkpoint results/lj13/rung_3/model.pt \\
        --reference results/lj13/reference/rung_4.h5 --system lj13 --temperature 1.2

On frames x ~ pi (the reference at --temperature T'), d = gamma E(x, sigma_min) - U(x)/kT' with
gamma = T_model / T' is the final correction's log-weight of a perfect sample. Prints one JSON line:
its spread, its mean per quartile of U (a model that under-weights the cold region shows a large d
in the lowest quartile), and 1 / (E_pi[e^d] E_pi[e^-d]), the final ESS/N an anneal that delivered
exactly exp(-gamma E) would reach, as far as the reference frames can tell (regions the model
favours but pi never visits are invisible to it: an anneal can do much worse, never better by
construction). Used in docs/RESULTS.md, "Bond-scale resolution and a repulsive core".
"""
from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from pita.fidelity import energies, held_out_data
from pita.models import load_checkpoint
from pita.samples import SampleSet
from pita.systems import from_argument


def next_temperature_fidelity(model, system, frames: SampleSet, temperature: float) -> dict:
    h = held_out_data(frames, system, model)
    e = energies(model, h["x"], model.config["sigma_min"]).numpy()
    gamma = float(model.config["temperature"]) / temperature
    u = np.asarray(frames.energy, dtype=np.float64) / system.kT(temperature)
    d = gamma * e - u
    d -= d.mean()
    quartile = np.digitize(u, np.quantile(u, [0.25, 0.5, 0.75]))
    return {"n": int(len(d)), "gamma": gamma, "log_weight_sd": float(d.std()),
            "mean_log_weight_by_energy_quartile": [float(d[quartile == q].mean()) for q in range(4)],
            "perfect_anneal_ess_fraction": float(1.0 / (np.mean(np.exp(d)) * np.mean(np.exp(-d))))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--reference", required=True, help="frames at --temperature (positions, energy)")
    p.add_argument("--system", required=True)
    p.add_argument("--temperature", type=float, required=True)
    p.add_argument("--max-frames", type=int, default=20000)
    args = p.parse_args()
    torch.set_num_threads(1)
    system = from_argument(args.system)
    model = load_checkpoint(args.checkpoint)
    frames = SampleSet.read(args.reference)
    if len(frames) > args.max_frames:
        frames = frames.subset(np.linspace(0, len(frames) - 1, args.max_frames).astype(int))
    out = {"checkpoint": args.checkpoint, "reference": args.reference, "temperature": args.temperature,
           "model_temperature": float(model.config["temperature"])}
    out.update(next_temperature_fidelity(model, system, frames, args.temperature))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
