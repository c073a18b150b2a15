"""Training losses of one rung (docs/METHOD.md, section 5), per sample: each returns a (B,) tensor.

All quantities live in normalised coordinates x~ (B, D); x_sigma = x_0 + sigma eps. Squared
errors are SUMMED over the D coordinates, as in the paper (|v|^2, not |v|^2 / D): the vector
terms (denoising, distillation, target score) then grow with the molecule's size like the
log-density does, and keep the paper's balance against the scalar energy-matching term
(averaging would down-weight them D-fold, 66-fold for alanine dipeptide). The trainer combines
the terms with the config's weights and the per-sample importance weights.
"""
from __future__ import annotations

import torch


def sum_square(v: torch.Tensor) -> torch.Tensor:
    """|v|^2 per sample: the squared error summed over the coordinates (the paper's reduction)."""
    return v.pow(2).sum(dim=-1)


def _col(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.reshape(-1, 1)


class DenoisingScoreMatching:
    """lambda(sigma) |D(x_sigma, sigma) - x_0|^2,  lambda = (sigma^2 + sd^2) / (sigma sd)^2."""

    def __init__(self, sd: float) -> None:
        self.sd = float(sd)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sd**2) / (sigma * self.sd) ** 2

    def __call__(self, denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.weight(sigma) * sum_square(denoised - x0)


class EnergyDistillation:
    """lambda(sigma) |D_E(x_sigma) - stopgrad D(x_sigma)|^2,  D_E = x_sigma - sigma^2 grad E(x_sigma)."""

    def __init__(self, sd: float) -> None:
        self.sd = float(sd)

    def weight(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma**2 + self.sd**2) / (sigma * self.sd) ** 2

    def __call__(self, energy_grad: torch.Tensor, x_sigma: torch.Tensor, sigma: torch.Tensor,
                 denoised: torch.Tensor) -> torch.Tensor:
        denoised_by_energy = x_sigma - _col(sigma) ** 2 * energy_grad
        return self.weight(sigma) * sum_square(denoised_by_energy - denoised.detach())


class EnergyMatching:
    """(E(x_0, sigma_min) - U(x_0)/kT_k + offset)^2; offset: U/kT ~ E(., sigma_min) + offset."""

    def __call__(self, energy_at_sigma_min: torch.Tensor, reduced_energy: torch.Tensor,
                 offset: torch.Tensor | float) -> torch.Tensor:
        return (energy_at_sigma_min - reduced_energy + offset) ** 2


class TargetScore:
    """|x_sigma - sigma^2 grad(U/kT_k)(x_0) - D(x_sigma)|^2 for sigma < max_sigma (else 0), unweighted.

    For small sigma, E[x_0 | x_sigma] ~ x_sigma - sigma^2 grad(U/kT)(x_0); in x~,
    grad(U/kT) = -L F / kT, so the stored forces give the target without energy evaluations.
    """

    def __init__(self, max_sigma: float = 0.2) -> None:
        self.max_sigma = float(max_sigma)

    def mask(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma < self.max_sigma).to(sigma.dtype)

    def __call__(self, denoised: torch.Tensor, x_sigma: torch.Tensor, sigma: torch.Tensor,
                 reduced_energy_grad: torch.Tensor) -> torch.Tensor:
        target = x_sigma - _col(sigma) ** 2 * reduced_energy_grad
        return self.mask(sigma) * sum_square(denoised - target)


class ForceMatching:
    """|grad E(x_0, sigma_min) - grad(U/kT_k)(x_0)|^2: the stored forces of every training sample
    fit the energy's gradient at the data, where energy matching fits only its value (one number
    per sample against D). No energy evaluations: the forces come with the samples.

    Unlike the target-score term, whose error in denoiser form is scaled by sigma^4 (negligible at
    sigma_min), this one acts on the field that the final weights and the drift use at small sigma.
    """

    def __call__(self, energy_grad_at_sigma_min: torch.Tensor, reduced_energy_grad: torch.Tensor) -> torch.Tensor:
        return sum_square(energy_grad_at_sigma_min - reduced_energy_grad)


class HeatEquationResidual:
    """Spread over x, at fixed sigma, of tau r(x, tau), with tau = sigma^2 and

        r = dE/dtau - (laplacian E - |grad E|^2) / 2.

    The noised data density p_tau = p_0 * N(0, tau) solves the heat equation dp/dtau = laplacian p / 2,
    so E = -log p_tau + c(tau) has r = c'(tau), the same at every x. Denoising score matching fits
    grad E at each sigma on its own and leaves r free; yet at gamma = 1 with the score -grad E the
    FK-SMC log-weight rate is exactly r (pita/fksmc.py), so its spread over particles is what the
    weights accumulate between sigma_max and sigma_min. tau r is that rate per unit ln tau (the
    sampler steps nearly uniformly in ln sigma), which makes the groups' scales comparable.

    Each group shares one sigma. The laplacian is a Hutchinson estimate v^T H v; the residuals r1,
    r2 of two independent probes differ only in it, and the weighted covariance of (tau r1, tau r2)
    over a group estimates Var_x(tau r) without bias (a single probe would add its own variance,
    2 sum_{i != j} H_ij^2, and penalise the Hessian's off-diagonal, which the data need).
    """

    def __init__(self, group_size: int) -> None:
        if group_size < 2:
            raise ValueError("heat-equation residual: groups need at least 2 samples")
        self.group_size = int(group_size)

    @staticmethod
    def residuals(energy_model, x: torch.Tensor, sigma: torch.Tensor, probes: torch.Tensor,
                  cond: torch.Tensor | None = None) -> torch.Tensor:
        """tau r (k, B) for k probe sets (k, B, D) at noised points x (B, D), differentiable."""
        x = x.detach().requires_grad_(True)
        sigma = sigma.detach().requires_grad_(True)
        energy = energy_model(x, sigma, cond)
        grad_x, grad_sigma = torch.autograd.grad(energy.sum(), (x, sigma), create_graph=True)
        tau = sigma.detach() ** 2
        dE_dtau = grad_sigma / (2.0 * sigma.detach())
        out = []
        for v in probes:
            (hv,) = torch.autograd.grad((grad_x * v).sum(), x, create_graph=True)
            out.append(HeatEquationResidual.rate(tau, dE_dtau, (hv * v).sum(-1), grad_x))
        return torch.stack(out)

    @staticmethod
    def rate(tau, dE_dtau: torch.Tensor, laplacian: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
        """tau r = tau (dE/dtau - (laplacian E - |grad E|^2) / 2)."""
        return tau * (dE_dtau - 0.5 * (laplacian - sum_square(grad_x)))

    def __call__(self, tau_r: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Mean over groups of the weighted covariance of tau r1 and tau r2 (tau_r: (2, B), B = groups x size)."""
        m = self.group_size
        r1, r2 = tau_r[0].reshape(-1, m), tau_r[1].reshape(-1, m)
        w = weight.reshape(-1, m)
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
        d1 = r1 - (w * r1).sum(-1, keepdim=True)
        d2 = r2 - (w * r2).sum(-1, keepdim=True)
        # (1 - sum w^2) makes the weighted covariance unbiased (m / (m - 1) for equal weights)
        return ((w * d1 * d2).sum(-1) / (1.0 - (w * w).sum(-1)).clamp_min(1e-12)).mean()
