"""Variance-exploding noise schedule (EDM form) and the noise levels used for training.

Diffusion time t runs over [0, 1]; the noise level is

    sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho,

so sigma(0) = sigma_min and sigma(1) = sigma_max. With x_t = x_0 + sigma(t) eps the forward
SDE is dx = g(t) dW with g(t)^2 = d sigma^2 / dt = 2 sigma(t) sigma'(t).

Training noise levels (docs/METHOD.md, section 3): EDM's lognormal ln sigma ~ N(P_mean, P_std^2)
suits the denoiser but covers little of the sampling path, which runs uniformly in t from
sigma_max to sigma_min; the energy model is used along that whole path, so training draws
from a mixture of the lognormal and a log-uniform distribution on [sigma_min, sigma_max].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _as_tensor(v) -> torch.Tensor:
    """Tensors pass through; Python numbers become float64 scalars."""
    return v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)


@dataclass(frozen=True)
class EDMSchedule:
    sigma_min: float = 0.01
    sigma_max: float = 17.0
    rho: float = 7.0

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(f"schedule: need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if self.rho <= 0:
            raise ValueError(f"schedule: rho must be positive, got {self.rho}")

    @property
    def _a(self) -> float:  # sigma_min^(1/rho)
        return self.sigma_min ** (1.0 / self.rho)

    @property
    def _b(self) -> float:  # sigma_max^(1/rho) - sigma_min^(1/rho)
        return self.sigma_max ** (1.0 / self.rho) - self._a

    def sigma(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_tensor(t)
        return (self._a + t * self._b) ** self.rho

    def dsigma_dt(self, t: torch.Tensor | float) -> torch.Tensor:
        t = _as_tensor(t)
        return self.rho * self._b * (self._a + t * self._b) ** (self.rho - 1.0)

    def g2(self, t: torch.Tensor | float) -> torch.Tensor:
        """g(t)^2 = d sigma^2 / dt = 2 sigma sigma'."""
        return 2.0 * self.sigma(t) * self.dsigma_dt(t)

    def t_of_sigma(self, sigma: torch.Tensor | float) -> torch.Tensor:
        """Inverse of sigma(t)."""
        sigma = _as_tensor(sigma)
        return (sigma ** (1.0 / self.rho) - self._a) / self._b

    def as_dict(self) -> dict:
        return {"sigma_min": float(self.sigma_min), "sigma_max": float(self.sigma_max), "rho": float(self.rho)}


@dataclass(frozen=True)
class LogNormalSigma:
    """EDM's training distribution: ln sigma ~ N(mean, std^2)."""

    mean: float = -1.2
    std: float = 1.2

    def __call__(self, n: int, generator: torch.Generator | None = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        z = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.exp(self.mean + self.std * z)


@dataclass(frozen=True)
class LogUniformSigma:
    """ln sigma uniform on [ln sigma_min, ln sigma_max]."""

    sigma_min: float
    sigma_max: float

    def __call__(self, n: int, generator: torch.Generator | None = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        u = torch.rand(n, generator=generator, device=device, dtype=dtype)
        lo, hi = math.log(self.sigma_min), math.log(self.sigma_max)
        return torch.exp(lo + (hi - lo) * u)


@dataclass(frozen=True)
class SigmaMixture:
    """With probability `loguniform_fraction` a log-uniform draw on [sigma_min, sigma_max], else lognormal."""

    lognormal: LogNormalSigma
    loguniform: LogUniformSigma
    loguniform_fraction: float = 0.5

    def __call__(self, n: int, generator: torch.Generator | None = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
        a = self.lognormal(n, generator, device, dtype)
        b = self.loguniform(n, generator, device, dtype)
        pick_b = torch.rand(n, generator=generator, device=device, dtype=dtype) < self.loguniform_fraction
        return torch.where(pick_b, b, a)


def estimate_sigma_max(x: torch.Tensor, n_atoms: int | None) -> float:
    """sigma_max ~ the largest distance between two (rotated) configurations: 2 max |x~|.

    x: flat normalised coordinates (N, D). For particles |x~| is the norm of the whole
    mean-free configuration (a rotation of it can land anywhere on that sphere).
    """
    norms = x.reshape(x.shape[0], -1).norm(dim=1)
    return float(2.0 * norms.max())


def measure_sd(x: torch.Tensor, n_atoms: int | None) -> float:
    """Data scale for the EDM preconditioning: root mean square of a coordinate of x~.

    The RMS (not the std about the data mean) is what c_skip assumes (a zero-mean model of the
    data). For particles it is taken over the 3(n-1) dimensions of the mean-free subspace.
    """
    from .coords import mean_free_dim

    d = mean_free_dim(x.shape[1], n_atoms)
    return float(torch.sqrt(x.double().pow(2).sum(1).mean() / d))
