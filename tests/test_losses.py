"""Training losses (pita.losses): closed-form values on hand-made inputs, and the paper's reduction.

The paper sums squared errors over the coordinates; averaging them instead would shrink the
vector losses (denoising, distillation, target score) D-fold against the scalar
energy-matching loss (66-fold for alanine dipeptide). Every expected number below is worked
out by hand as a sum over the 3 coordinates.
"""
from __future__ import annotations

import torch

from pita.losses import (DenoisingScoreMatching, EnergyDistillation, EnergyMatching, ForceMatching, TargetScore,
                         sum_square)


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
