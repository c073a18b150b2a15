"""Lennard-Jones clusters (LJ-13, LJ-55) in the DEM/PITA benchmark convention, reduced units.

U(x) = sum_{i != j} eps [(r_m/r_ij)^12 - 2 (r_m/r_ij)^6]   (both orderings of each pair)
       + 1/2 sum_i |x_i - centroid|^2                       (harmonic term keeps the cluster together)
with eps = 1, r_m = 1, k_B = 1.
"""
from __future__ import annotations

import torch

from .base import System


class LennardJonesCluster(System):
    units = "reduced"
    kB = 1.0
    mean_free = True

    def __init__(self, n_particles: int = 13, epsilon: float = 1.0, r_m: float = 1.0, oscillator_scale: float = 1.0,
                 length_scale: float = 1.0) -> None:
        super().__init__()
        self.n_atoms = int(n_particles)
        self.name = f"lj{self.n_atoms}"
        self.epsilon = float(epsilon)
        self.r_m = float(r_m)
        self.oscillator_scale = float(oscillator_scale)
        self.length_scale = float(length_scale)
        iu = torch.triu_indices(self.n_atoms, self.n_atoms, offset=1)
        self._i, self._j = iu[0], iu[1]

    def spec(self) -> dict:
        return {"name": self.name, "epsilon": self.epsilon, "r_m": self.r_m,
                "oscillator_scale": self.oscillator_scale, "length_scale": self.length_scale}

    def _pairs(self, x: torch.Tensor) -> torch.Tensor:
        i, j = self._i.to(x.device), self._j.to(x.device)
        return x[:, i, :] - x[:, j, :]

    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        r2 = self._pairs(x).pow(2).sum(-1)
        s6 = (self.r_m**2 / r2) ** 3
        # each unordered pair counted twice: the convention sums over both orderings
        lj = 2.0 * self.epsilon * (s6 * s6 - 2.0 * s6).sum(-1)
        centred = x - x.mean(dim=1, keepdim=True)
        return lj + 0.5 * self.oscillator_scale * centred.pow(2).sum(dim=(-2, -1))

    def _energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # analytic forces: dU/dr for U_pair = 2 eps (s^12 - 2 s^6), s = r_m / r
        d = self._pairs(x)
        r2 = d.pow(2).sum(-1)
        s6 = (self.r_m**2 / r2) ** 3
        energy = 2.0 * self.epsilon * (s6 * s6 - 2.0 * s6).sum(-1)
        # -(1/r) dU/dr = 2 eps (12 s^12 - 12 s^6) / r^2
        coef = 2.0 * self.epsilon * 12.0 * (s6 * s6 - s6) / r2
        fij = coef.unsqueeze(-1) * d  # force on i from j
        forces = torch.zeros_like(x)
        i, j = self._i.to(x.device), self._j.to(x.device)
        forces.index_add_(1, i, fij)
        forces.index_add_(1, j, -fij)
        centred = x - x.mean(dim=1, keepdim=True)
        energy = energy + 0.5 * self.oscillator_scale * centred.pow(2).sum(dim=(-2, -1))
        # the centroid's dependence drops out of the gradient because sum(centred) = 0
        forces = forces - self.oscillator_scale * centred
        return energy, forces
