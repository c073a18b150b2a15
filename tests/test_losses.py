"""Training losses (pita.losses): closed-form values on hand-made inputs, and the paper's reduction.

The paper sums squared errors over the coordinates; averaging them instead would shrink the
vector losses (denoising, distillation, target score) D-fold against the scalar
energy-matching loss (66-fold for alanine dipeptide). Every expected number below is worked
out by hand as a sum over the 3 coordinates.
"""
from __future__ import annotations

import numpy as np
import torch

from pita.losses import (DenoisingScoreMatching, EnergyDistillation, EnergyMatching, ForceMatching, HeatEquationResidual,
                         TargetScore, sum_square)


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_sum_square():
    assert torch.equal(sum_square(t([[1.0, -1.0, 2.0], [0.0, 0.0, 3.0]])), t([6.0, 9.0]))


def test_denoising_score_matching_by_hand():
    # sd = 1: lambda(1) = (1 + 1)/1 = 2, lambda(2) = (4 + 1)/4 = 1.25
    loss = DenoisingScoreMatching(sd=1.0)
    x0 = t([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    denoised = t([[1.0, -1.0, 2.0], [1.0, 2.0, 4.0]])  # errors |(1,-1,2)|^2 = 6, |(0,0,1)|^2 = 1
    sigma = t([1.0, 2.0])
    torch.testing.assert_close(loss(denoised, x0, sigma), t([2.0 * 6.0, 1.25 * 1.0]))


def test_energy_distillation_by_hand_and_stopgrad():
    loss = EnergyDistillation(sd=1.0)
    x_sigma = t([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    grad_e = t([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]]).requires_grad_(True)
    sigma = t([1.0, 2.0])
    # D_E = x - sigma^2 grad E = (0,-1,-1), (0,-4,0)
    denoised = t([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]).requires_grad_(True)
    value = loss(grad_e, x_sigma, sigma, denoised)  # |(0,-1,-1)|^2 = 2, |(0,-4,-1)|^2 = 17
    torch.testing.assert_close(value, t([2.0 * 2.0, 1.25 * 17.0]))
    value.sum().backward()
    assert denoised.grad is None  # the denoiser is the (stop-gradient) target
    # d/dg lambda |x - s^2 g - D|^2 = -2 lambda s^2 (x - s^2 g - D)
    torch.testing.assert_close(grad_e.grad, t([[0.0, 4.0, 4.0], [0.0, 40.0, 10.0]]))


def test_energy_matching_by_hand():
    loss = EnergyMatching()
    value = loss(t([1.0, 2.0]), t([0.5, 4.0]), 0.5)  # (1 - 0.5 + 0.5)^2, (2 - 4 + 0.5)^2
    torch.testing.assert_close(value, t([1.0, 2.25]))


def test_target_score_by_hand():
    loss = TargetScore(max_sigma=0.2)
    x_sigma = t([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    grad_u = t([[100.0, 0.0, -100.0], [0.0, 0.0, 0.0]])
    sigma = t([0.1, 0.5])  # target x - 0.01 grad = (0, 2, 4); the second row is above max_sigma
    denoised = t([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])  # error (1, 0, -1): 2
    torch.testing.assert_close(loss(denoised, x_sigma, sigma, grad_u), t([2.0, 0.0]))


def test_force_matching_by_hand_and_gradient():
    loss = ForceMatching()
    grad_e = t([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]).requires_grad_(True)
    grad_u = t([[1.0, 0.0, 3.0], [1.0, 1.0, -1.0]])
    value = loss(grad_e, grad_u)  # |(0, 2, 0)|^2 = 4, |(-1, -1, 1)|^2 = 3
    torch.testing.assert_close(value, t([4.0, 3.0]))
    value.sum().backward()
    torch.testing.assert_close(grad_e.grad, 2.0 * (grad_e.detach() - grad_u))


def test_target_score_is_blind_to_forces_at_sigma_min():
    """Why force matching exists: in denoiser form the target-score error is sigma^4 |grad E - grad U|^2,
    1e-8 of it at sigma_min = 0.01, so it cannot shape the energy's gradient where the weights use it."""
    x = t([[0.0, 0.0, 0.0]])
    grad_u = t([[100.0, 0.0, 0.0]])
    sigma = t([0.01])
    denoised_by_zero_grad = x  # D_E with grad E = 0: a force error of 100
    assert float(TargetScore(0.2)(denoised_by_zero_grad, x, sigma, grad_u)) < 1e-3
    assert float(ForceMatching()(t([[0.0, 0.0, 0.0]]), grad_u)) == 1e4


def test_vector_losses_scale_with_dimension_against_energy_matching():
    """Repeating every coordinate k times multiplies the vector losses by k (a sum over
    coordinates), while the scalar energy-matching loss is unchanged: the ratio of a vector
    loss to the energy-matching loss grows with D, as in the paper."""
    g = torch.Generator().manual_seed(0)
    B, D = 5, 3
    x0 = torch.randn(B, D, generator=g, dtype=torch.float64)
    denoised = torch.randn(B, D, generator=g, dtype=torch.float64)
    grad_e = torch.randn(B, D, generator=g, dtype=torch.float64)
    grad_u = torch.randn(B, D, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.05, 0.1, 0.15, 0.5, 1.0], dtype=torch.float64)
    x_sigma = x0 + sigma[:, None] * torch.randn(B, D, generator=g, dtype=torch.float64)
    energy, reduced = torch.randn(B, generator=g, dtype=torch.float64), torch.randn(B, generator=g, dtype=torch.float64)
    em = EnergyMatching()(energy, reduced, 0.3)

    def vector_losses(k):
        rep = lambda v: v.repeat(1, k)  # noqa: E731 - the same error in k times as many coordinates
        return torch.stack([
            DenoisingScoreMatching(0.7)(rep(denoised), rep(x0), sigma),
            EnergyDistillation(0.7)(rep(grad_e), rep(x_sigma), sigma, rep(denoised)),
            TargetScore(0.2)(rep(denoised), rep(x_sigma), sigma, rep(grad_u)),
        ])

    base = vector_losses(1)
    assert bool((base[:2] > 0).all())
    for k in (2, 22):  # D = 6, D = 66 (alanine dipeptide)
        torch.testing.assert_close(vector_losses(k), k * base)
        torch.testing.assert_close(vector_losses(k)[0] / em, k * base[0] / em)


class _GaussianEnergy(torch.nn.Module):
    """E = x^T (C + s^2 tau)^-1 x / 2 with tau = sigma^2: the exact diffused energy of N(0, C) when s = 1
    (up to a sigma-only constant); s != 1 has the wrong sigma-dependence."""

    def __init__(self, cov: torch.Tensor, s: float = 1.0) -> None:
        super().__init__()
        self.cov, self.s = cov, s

    def forward(self, x, sigma, cond=None):
        eye = torch.eye(self.cov.shape[0], dtype=x.dtype)
        prec = torch.linalg.inv(self.cov + (self.s * sigma).reshape(-1, 1, 1) ** 2 * eye)
        return 0.5 * torch.einsum("bi,bij,bj->b", x, prec, x)


def _noised(cov, sigma, g):
    d = cov.shape[0]
    chol = torch.linalg.cholesky(cov + sigma.reshape(-1, 1, 1) ** 2 * torch.eye(d, dtype=cov.dtype))
    return torch.einsum("bij,bj->bi", chol, torch.randn(len(sigma), d, generator=g, dtype=cov.dtype))


def test_heat_equation_residual_by_hand_for_a_gaussian():
    """For E = x^T (C + tau)^-1 x / 2, r = dE/dtau - (lap E - |grad E|^2)/2 = -tr((C + tau)^-1)/2 at every x,
    and with a diagonal C a Rademacher probe gives the laplacian exactly."""
    g = torch.Generator().manual_seed(0)
    cov = torch.diag(t([0.01, 0.3, 2.0]))
    sigma = t([0.05, 0.05, 0.7, 0.7, 3.0, 3.0])
    x = _noised(cov, sigma, g)
    probes = torch.randint(0, 2, (2, *x.shape), generator=g).double() * 2 - 1
    tau_r = HeatEquationResidual.residuals(_GaussianEnergy(cov), x, sigma, probes)
    tau = sigma**2
    expected = -0.5 * tau * (1.0 / (torch.diag(cov)[None, :] + tau[:, None])).sum(-1)
    assert torch.allclose(tau_r[0], expected, atol=1e-9) and torch.allclose(tau_r[1], expected, atol=1e-9)


def test_heat_equation_residual_vanishes_only_for_the_consistent_energy():
    """Mean over batches of the group covariance: ~0 for the exact diffused Gaussian (non-diagonal C, so the
    probes are noisy and only the two-probe covariance removes their variance), > 0 when E's sigma-dependence
    is off by 20 %; and it has a gradient."""
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))
    cov = q @ torch.diag(t([0.01, 0.1, 1.0, 3.0])) @ q.T
    loss = HeatEquationResidual(group_size=16)
    means = {}
    for s in (1.0, 1.2):
        vals = []
        for _ in range(100):
            sigma = torch.exp(torch.empty(8, dtype=torch.float64).uniform_(-4.0, 1.5, generator=g)).repeat_interleave(16)
            x = _noised(cov, sigma, g)
            probes = torch.randint(0, 2, (2, *x.shape), generator=g).double() * 2 - 1
            vals.append(float(loss(HeatEquationResidual.residuals(_GaussianEnergy(cov, s), x, sigma, probes).detach(),
                                   torch.ones(len(x), dtype=torch.float64))))
        means[s] = (np.mean(vals), np.std(vals) / np.sqrt(len(vals)))
    assert abs(means[1.0][0]) < 3 * means[1.0][1] + 1e-3
    assert means[1.2][0] > 0.02 and means[1.2][0] > 10 * means[1.2][1]
    # differentiable through the energy's parameters
    scale = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    model = _GaussianEnergy(cov)
    model.s = scale
    sigma = t([0.3] * 16 + [1.0] * 16)
    x = _noised(cov, sigma, g)
    probes = torch.randint(0, 2, (2, *x.shape), generator=g).double() * 2 - 1
    loss(HeatEquationResidual.residuals(model, x, sigma, probes), torch.ones(32, dtype=torch.float64)).backward()
    assert scale.grad is not None and torch.isfinite(scale.grad)
