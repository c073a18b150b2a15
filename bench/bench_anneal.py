"""Benchmark of pita.fksmc.anneal: particle-steps/s and the overhead over the network passes alone.

    python bench/bench_anneal.py [--n-particles 256] [--steps 10] [--device cpu|cuda] [--threads N]

Model: the default ALDP PitaModel (MLP backbone, 22 atoms, untrained weights: speed does not
depend on training) or a stand-in MLP energy/score model of the same size if pita.models is
not importable. For each configuration it measures, in the same run,
  step   = wall time of one annealing step (difference of two runs with different step counts,
           so initialisation and the final bookkeeping cancel),
  passes = the network work of one step alone (energy forward+backward, score forward,
           divergence passes, the extra energy forward of the finite-difference time term),
and prints step/passes (target <= 1.3).
"""
from __future__ import annotations

import argparse
import logging
import time

import torch


def make_model(device):
    try:
        from pita import KB_KJ_PER_MOL_K
        from pita.models import PitaModel

        torch.manual_seed(0)
        m = PitaModel({"dim": 66, "n_atoms": 22, "sd": 1.0, "temperature": 600.0, "sigma_min": 0.01,
                       "sigma_max": 17.0, "length_scale": 0.164, "units": "kJ/mol,nm", "kB": KB_KJ_PER_MOL_K})
        return m.to(device).eval(), "PitaModel (default mlp)"
    except Exception:  # noqa: BLE001 - stand-in when pita.models is missing
        return StandIn().to(device), "stand-in MLP"


class StandIn(torch.nn.Module):
    mean_free, n_atoms, dim, sigma_min, sigma_max, rho = True, 22, 66, 0.01, 17.0, 7.0

    def __init__(self, hidden=256, layers=3):
        super().__init__()

        def mlp(out):
            mods, d = [], 66 + 1
            for _ in range(layers):
                mods += [torch.nn.Linear(d, hidden), torch.nn.SiLU()]
                d = hidden
            return torch.nn.Sequential(*mods, torch.nn.Linear(d, out))

        self.e, self.s = mlp(1), mlp(66)

    def energy(self, x, sigma):
        return self.e(torch.cat([x, torch.log(sigma)[:, None] / 4], -1))[:, 0]

    def score(self, x, sigma):
        return self.s(torch.cat([x, torch.log(sigma)[:, None] / 4], -1))


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def passes_time(model, n, device, divergence, probes, time_derivative, weights, reps):
    from pita.coords import remove_mean
    from pita.fksmc import divergence as div_fn

    gen = torch.Generator().manual_seed(0)
    x = remove_mean(torch.randn(n, 66, generator=gen), 22).to(device)
    sig = torch.full((n,), 1.0, device=device)

    def once():
        xr = x.detach().requires_grad_(True)
        e = model.energy(xr, sig)
        (g,) = torch.autograd.grad(e.sum(), xr)
        s = remove_mean(model.score(xr, sig), 22)
        if weights == "continuous":
            if divergence == "exact":
                div_fn(s, xr, "exact", n_atoms=22)
            else:
                v = remove_mean(torch.randn(probes * n, 66, device=device), 22).reshape(probes, n, 66)
                div_fn(s, xr, "hutchinson", probes=v)
            if time_derivative == "finite_difference":
                with torch.no_grad():
                    model.energy(x, sig * 0.99)
        return g

    once()
    sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        once()
    sync(device)
    return (time.perf_counter() - t) / reps


def step_time(model, n, steps, device, **kw):
    from pita.fksmc import anneal

    def run(k):
        sync(device)
        t = time.perf_counter()
        anneal(model, 1.5, n, k, seed=0, device=device, **kw)
        sync(device)
        return time.perf_counter() - t

    run(2)  # warm-up
    t_short = min(run(2) for _ in range(2))
    t_long = run(2 + steps)
    return (t_long - t_short) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-particles", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    logging.getLogger("pita.fksmc").setLevel(logging.ERROR)  # untrained weights: ESS collapse warnings are expected
    if args.threads:
        torch.set_num_threads(args.threads)
    model, name = make_model(args.device)
    print(f"model: {name}; {args.n_particles} particles; device {args.device}; torch threads {torch.get_num_threads()}")
    configs = [
        ("exact div, FD time term (default)", dict(divergence_method="exact", time_derivative="finite_difference")),
        ("hutchinson k=1, FD time term", dict(divergence_method="hutchinson", n_probes=1, time_derivative="finite_difference")),
        ("hutchinson k=1, autograd time term", dict(divergence_method="hutchinson", n_probes=1, time_derivative="autograd")),
        ("discrete-time weights (no divergence)", dict(weights="discrete")),
    ]
    print(f"{'configuration':42s} {'step ms':>9s} {'passes ms':>10s} {'ratio':>6s} {'particle-steps/s':>17s}")
    for label, kw in configs:
        st = step_time(model, args.n_particles, args.steps, args.device, **kw)
        pt = passes_time(model, args.n_particles, args.device, kw.get("divergence_method", "exact"), kw.get("n_probes", 1),
                         kw.get("time_derivative", "finite_difference"), kw.get("weights", "continuous"), args.steps)
        print(f"{label:42s} {1e3 * st:9.2f} {1e3 * pt:10.2f} {st / pt:6.2f} {args.n_particles / st:17.0f}", flush=True)


if __name__ == "__main__":
    main()
