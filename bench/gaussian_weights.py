"""The FK-SMC path weights' own spread: anneal driven by the EXACT model of an anisotropic Gaussian
(per-coordinate spreads log-uniform in [--std-min, 1], like a molecule's stiff and soft modes in
model units), no resampling. A perfect model still gets this log-weight sd from the drift and the
time discretisation.

    python bench/gaussian_weights.py --dim 63 --steps 200 800

Prints one line per (drift, weights, steps, gamma) (docs/RESULTS.md, "Why the weights collapse").
"""
from __future__ import annotations

import argparse
import itertools

import numpy as np
import torch

from pita.fksmc import anneal
from pita.systems.gmm import AnalyticDiffusionModel, GaussianMixture


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=63)
    p.add_argument("--std-min", type=float, default=0.02)
    p.add_argument("--steps", type=int, nargs="+", default=[200])
    p.add_argument("--gammas", type=float, nargs="+", default=[1.0, 1.59])
    p.add_argument("--particles", type=int, default=1000)
    p.add_argument("--sigma-max", type=float, default=18.0)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    stds = np.exp(np.random.default_rng(0).uniform(np.log(args.std_min), 0.0, args.dim))
    model = AnalyticDiffusionModel(GaussianMixture(means=[np.zeros(args.dim)], covs=[np.diag(stds ** 2)],
                                                   weights=[1.0]))
    variants = [("pita", "discrete", "exact"), ("tempered", "discrete", "exact"), ("pita", "continuous", "exact"),
                ("tempered", "continuous", "exact"), ("tempered", "continuous", "hutchinson")]
    for (drift, weights, div), n_steps, gamma in itertools.product(variants, args.steps, args.gammas):
        r = anneal(model, gamma, args.particles, n_steps, weights=weights, divergence_method=div, drift=drift,
                   resample_threshold=0.0, seed=args.seed, sigma_min=0.01, sigma_max=args.sigma_max, rho=7.0,
                   dtype=torch.float64)
        print(f"drift {drift:8s} weights {weights:10s} divergence {div:10s} steps {n_steps:4d} gamma {gamma:.2f}: "
              f"log-weight sd {np.std(r.log_weight_path):.2f}, path ESS/N {r.ess_path / args.particles:.4f}",
              flush=True)


if __name__ == "__main__":
    main()
