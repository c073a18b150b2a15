"""EDM-preconditioned denoiser and the energy model built on the same preconditioning.

With data scale sd and noise level sigma (Karras et al. 2022, "Elucidating the design space"):

    c_skip = sd^2 / (sigma^2 + sd^2)     c_out = sigma sd / sqrt(sigma^2 + sd^2)
    c_in   = 1 / sqrt(sigma^2 + sd^2)     c_noise = ln(sigma) / 4

Score model:   D(x, sigma) = c_skip x + c_out F(c_in x, c_noise),   s = (D - x) / sigma^2.

Energy model:  E(x, sigma) = |x|^2 / (2 (sigma^2 + sd^2)) + a sd c_in G(c_in x, c_noise) + b

with G a scalar network, a a fixed scale (1; gamma after a warm start, see training.py) and b
a learnable bias. Its denoiser D_E = x - sigma^2 grad E works out to

    D_E(x, sigma) = c_skip x + c_out F_E,   F_E = -a sigma c_in grad_u G(u, c_noise),   u = c_in x,

the preconditioned form of D with F replaced by the gradient of a scalar. The prefactor
sd c_in = sd / sqrt(sigma^2 + sd^2) interpolates between the two scales G has to work at:
  - sigma -> 0: E = |x|^2 / (2 sd^2) + a G + b, so G is at the scale of U/kT itself, and the
    energy-matching target E(x, sigma_min) ~ U/kT needs no amplification of G's output;
  - sigma -> infinity: F_E = -a grad_u G, EDM's F at unit scale.
(The alternative prefactor sd / sigma, for which F_E = -a grad_u G at every sigma, is what a
<x - c_skip x - c_out F, x> / (2 sigma^2)-style energy gives; it multiplies G by sd/sigma_min
~ 100-200 at sigma_min, which made energy matching converge far more slowly: Pearson 0.64
against 0.997 with this form after the same 1000 steps on the 2-D Gaussian mixture.)
The first term is the exact diffused energy of N(0, sd^2 I) data; with G's output layer
starting at zero, -grad E equals the fresh score model's score at initialisation
(D = D_E = c_skip x), and at large sigma E tends to the noise-dominated |x|^2 / (2 sigma^2).

Particles: x is projected onto the mean-free subspace before anything else, so E(x) = E(Px)
(P the centroid-removing projection) and grad E, D and D_E are mean-free.
"""
from __future__ import annotations

import torch
from torch import nn

from ..coords import remove_mean


class EDMPreconditioning:
    def __init__(self, sd: float) -> None:
        self.sd = float(sd)

    def c_skip(self, sigma):
        return self.sd**2 / (sigma**2 + self.sd**2)

    def c_out(self, sigma):
        return sigma * self.sd / torch.sqrt(sigma**2 + self.sd**2)

    def c_in(self, sigma):
        return 1.0 / torch.sqrt(sigma**2 + self.sd**2)

    def c_noise(self, sigma):
        return torch.log(sigma) / 4.0


class ScoreModel(nn.Module):
    """D(x, sigma) = c_skip x + c_out F(c_in x, c_noise); score = (D - x) / sigma^2."""

    def __init__(self, network: nn.Module, sd: float, n_atoms: int | None) -> None:
        super().__init__()
        self.network = network
        self.precond = EDMPreconditioning(sd)
        self.n_atoms = n_atoms

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        p = self.precond
        x = remove_mean(x, self.n_atoms)
        s = sigma.reshape(-1, 1)
        f = remove_mean(self.network(p.c_in(s) * x, p.c_noise(sigma), cond), self.n_atoms)
        return p.c_skip(s) * x + p.c_out(s) * f

    def score(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return (self(x, sigma, cond) - remove_mean(x, self.n_atoms)) / sigma.reshape(-1, 1) ** 2


class EnergyModel(nn.Module):
    """E(x, sigma) = |x|^2 / (2 (sigma^2 + sd^2)) + a sd c_in G(c_in x, c_noise) + b."""

    def __init__(self, network: nn.Module, sd: float, n_atoms: int | None) -> None:
        super().__init__()
        self.network = network
        self.precond = EDMPreconditioning(sd)
        self.n_atoms = n_atoms
        self.bias = nn.Parameter(torch.zeros(()))
        #: a: multiplies the learned part; gamma after a warm start from the previous rung
        self.register_buffer("learned_scale", torch.ones(()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        p, sd = self.precond, self.precond.sd
        x = remove_mean(x, self.n_atoms)
        s = sigma.reshape(-1, 1)
        gaussian = x.pow(2).sum(-1) / (2.0 * (sigma**2 + sd**2))
        g = self.network(p.c_in(s) * x, p.c_noise(sigma), cond)
        return gaussian + self.learned_scale * sd * p.c_in(sigma) * g + self.bias

    def grad(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None,
             create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(E, grad_x E); differentiable further when create_graph (for training and divergences)."""
        with torch.enable_grad():
            if not x.requires_grad:
                x = x.detach().requires_grad_(True)
            energy = self(x, sigma, cond)
            (g,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
        return energy, g

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None = None,
                create_graph: bool = False) -> torch.Tensor:
        """D_E = x - sigma^2 grad E."""
        _, g = self.grad(x, sigma, cond, create_graph)
        return remove_mean(x, self.n_atoms) - sigma.reshape(-1, 1) ** 2 * g
