"""Analytic Gaussian mixture in R^d: exact densities for exactness tests of the method.

p(x) = sum_k w_k N(x; mu_k, C_k). Convolving with N(0, sigma^2 I) gives the mixture with
covariances C_k + sigma^2 I, so the diffused energy -log p_sigma and its score are exact.
Energies are -log p (k_B = 1, T = 1): the Boltzmann density at T = 1 is p itself and at
temperature T it is p^(1/T).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .base import System

DEFAULT_MIXTURE = {
    # 2-D, three modes of different widths and weights
    "means": [[-2.0, 0.0], [2.0, 1.0], [0.0, 3.0]],
    "stds": [0.5, 1.0, 0.3],
    "weights": [0.5, 0.3, 0.2],
}


class GaussianMixture(System):
    units = "reduced"
    kB = 1.0
    n_atoms = None
    mean_free = False
    length_scale = 1.0

    def __init__(self, means=None, covs=None, stds=None, weights=None, name: str = "gmm") -> None:
        super().__init__()
        self.name = name
        if means is None:
            means, stds, weights = DEFAULT_MIXTURE["means"], DEFAULT_MIXTURE["stds"], DEFAULT_MIXTURE["weights"]
        mu = np.atleast_2d(np.asarray(means, dtype=np.float64))
        k, d = mu.shape
        if covs is not None:
            c = np.asarray(covs, dtype=np.float64).reshape(k, d, d)
        else:
            s = np.ones(k) if stds is None else np.broadcast_to(np.asarray(stds, dtype=np.float64), (k,))
            c = (s**2)[:, None, None] * np.eye(d)[None]
        w = np.ones(k) / k if weights is None else np.asarray(weights, dtype=np.float64)
        if np.any(w <= 0):
            raise ValueError("gmm: weights must be positive")
        if not np.allclose(c, np.swapaxes(c, 1, 2)):
            raise ValueError("gmm: covariances must be symmetric")
        evals, evecs = np.linalg.eigh(c)
        if np.any(evals <= 0):
            raise ValueError("gmm: covariances must be positive definite")
        self.means = torch.as_tensor(mu)
        self.covs = torch.as_tensor(c)
        self.mix_weights = torch.as_tensor(w / w.sum())
        # C_k = R_k diag(lambda_k) R_k^T, so C_k + sigma^2 I = R_k diag(lambda_k + sigma^2) R_k^T:
        # the diffused densities need no factorisation per noise level
        self._evals = torch.as_tensor(evals)
        self._evecs = torch.as_tensor(evecs)
        self._dim = d

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def n_components(self) -> int:
        return int(self.means.shape[0])

    def spec(self) -> dict:
        return {"name": "gmm", "means": self.means.tolist(), "covs": self.covs.tolist(),
                "weights": self.mix_weights.tolist()}

    # ---- exact densities -----------------------------------------------------------------
    def _component_log_probs(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """log(w_k N(x; mu_k, C_k + sigma^2 I)) for each k (B, K), and the precision-weighted
        residuals (C_k + sigma^2 I)^-1 (x - mu_k) (B, K, d); sigma scalar or (B,)."""
        dtype, device = x.dtype, x.device
        mu = self.means.to(dtype=dtype, device=device)
        lam = self._evals.to(dtype=dtype, device=device)  # (K, d)
        rot = self._evecs.to(dtype=dtype, device=device)  # (K, d, d), columns = eigenvectors
        sigma = torch.as_tensor(sigma, dtype=dtype, device=device)
        s2 = sigma.reshape(-1, 1, 1) ** 2 if sigma.ndim > 0 else sigma**2
        var = lam.unsqueeze(0) + s2  # (B or 1, K, d)
        diff = x.unsqueeze(1) - mu.unsqueeze(0)  # (B, K, d)
        y = torch.einsum("bki,kij->bkj", diff, rot)  # coordinates along the eigenvectors
        maha = (y * y / var).sum(-1)
        logdet = torch.log(var).sum(-1)
        sol = torch.einsum("bkj,kij->bki", y / var, rot)
        logw = torch.log(self.mix_weights.to(dtype=dtype, device=device))
        comp = logw - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return comp, sol

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """log p_sigma(x), p_sigma = p * N(0, sigma^2 I); sigma scalar or (B,)."""
        comp, _ = self._component_log_probs(x, sigma)
        return torch.logsumexp(comp, dim=1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
        """grad_x log p_sigma(x)."""
        comp, sol = self._component_log_probs(x, sigma)
        resp = torch.softmax(comp, dim=1)
        return -(resp.unsqueeze(-1) * sol).sum(1)

    def diffused_energy(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return -self.log_prob(x, sigma)

    def diffused_score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        return self.score(x, sigma)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> torch.Tensor:
        comp = torch.multinomial(self.mix_weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        x = self.means[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)
        return x.to(dtype)

    # ---- System interface: U = -log p --------------------------------------------------
    def _energy(self, x: torch.Tensor) -> torch.Tensor:
        return -self.log_prob(x)

    def _energy_and_forces(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return -self.log_prob(x), self.score(x)


class AnalyticDiffusionModel:
    """The exact diffusion model of p^(1/T): E(x, sigma) = -log (p^(1/T) * N_sigma)(x) for T = 1.

    For T != 1 the tempered mixture is not a mixture of Gaussians in general, so only T = 1 is
    exact; `energy` and `score` follow the model interface used by `pita.fksmc.anneal`.
    """

    mean_free = False
    n_atoms = None

    def __init__(self, gmm: GaussianMixture) -> None:
        self.gmm = gmm
        self.dim = gmm.dim

    def energy(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.gmm.diffused_energy(x, sigma)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.gmm.diffused_score(x, sigma)
