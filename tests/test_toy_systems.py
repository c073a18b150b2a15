"""Lennard-Jones clusters and the analytic Gaussian mixture against known numbers."""
import math

import numpy as np
import pytest
import torch

import pita.systems as systems
from pita.errors import PitaInputError


def test_lj_dimer_known_energy():
    lj = systems.load("lj13")
    # two-particle version of the same convention: pair at r_m gives 2 * (1 - 2) = -2 (both orderings)
    from pita.systems.lj import LennardJonesCluster

    dimer = LennardJonesCluster(n_particles=2)
    x = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    # harmonic term: 1/2 * 2 * 0.5^2 = 0.25
    assert dimer.energy(x).item() == pytest.approx(-2.0 + 0.25, abs=1e-12)
    # at r = 2^(1/6) r_m ... the LJ minimum is at r_m in this convention: zero force from the pair
    e, f = dimer.energy_and_forces(x)
    harmonic_force = -(x - x.mean(1, keepdim=True))
    torch.testing.assert_close(f, harmonic_force)
    assert lj.n_atoms == 13 and lj.units == "reduced" and lj.kB == 1.0


def test_lj13_icosahedron_energy():
    # 12 vertices of an icosahedron around a centre, nearest-neighbour distance r_m = 1
    phi = (1 + 5**0.5) / 2
    v = []
    for a in (-1, 1):
        for b in (-phi, phi):
            v += [(0, a, b), (a, b, 0), (b, 0, a)]
    v = np.array(v, dtype=np.float64)
    v /= 2.0  # edge length of this icosahedron is 2: scale to edge r_m = 1
    x = np.vstack([np.zeros(3), v])
    d = np.linalg.norm(x[:, None] - x[None], axis=-1)
    iu = np.triu_indices(13, 1)
    r = d[iu]
    expected = 2 * np.sum(r**-12 - 2 * r**-6) + 0.5 * np.sum((x - x.mean(0)) ** 2)
    lj = systems.load("lj13")
    got = lj.energy(torch.as_tensor(x[None]))
    assert got.item() == pytest.approx(expected, rel=1e-12)
    # 30 edges at r_m, 12 centre-vertex pairs at the circumradius sin(2 pi / 5) = 0.951
    assert np.sum(np.isclose(r, 1.0)) == 30 and np.sum(np.isclose(r, np.sin(2 * np.pi / 5))) == 12
    assert got.item() < -70


def test_lj_forces_match_autograd_and_count():
    lj = systems.load("lj55")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 55, 3, generator=g, dtype=torch.float64) * 2.0
    e, f = lj.energy_and_forces(x)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(lj._energy(xr).sum(), xr)
    torch.testing.assert_close(f, -grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(e, lj.energy(x))
    assert lj.n_energy_evals == 6
    with pytest.raises(ValueError, match="expected positions of shape"):
        lj.energy(torch.zeros(2, 13, 3))


def test_gmm_density_normalised_and_diffused_by_quadrature():
    gmm = systems.load("gmm")
    grid = torch.linspace(-8, 8, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="ij")
    pts = torch.stack([xx.ravel(), yy.ravel()], 1)
    h = float(grid[1] - grid[0])
    p = gmm.log_prob(pts).exp()
    assert float(p.sum() * h * h) == pytest.approx(1.0, abs=1e-6)
    # diffused density at a point = numerical convolution of p with N(0, sigma^2 I)
    sigma = 0.7
    x0 = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    kernel = torch.exp(-((pts - x0) ** 2).sum(1) / (2 * sigma**2)) / (2 * math.pi * sigma**2)
    conv = float((p * kernel).sum() * h * h)
    assert gmm.log_prob(x0, sigma).exp().item() == pytest.approx(conv, rel=1e-6)
    # first moment of p by quadrature equals the mixture mean
    mean = (p[:, None] * pts).sum(0) * h * h
    exact = (gmm.mix_weights[:, None] * gmm.means).sum(0)
    torch.testing.assert_close(mean, exact, atol=1e-6, rtol=0)


def test_gmm_score_and_samples():
    gmm = systems.load({"name": "gmm", "means": [[0.0], [3.0]], "stds": [0.5, 1.0], "weights": [0.3, 0.7]})
    x = torch.linspace(-2, 5, 11, dtype=torch.float64)[:, None]
    sig = torch.full((11,), 0.4, dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(gmm.log_prob(xr, sig).sum(), xr)
    torch.testing.assert_close(gmm.score(x, sig), g)
    s = gmm.sample(200000, generator=torch.Generator().manual_seed(1))
    assert float(s.mean()) == pytest.approx(0.7 * 3.0, abs=0.02)
    assert float(s.var()) == pytest.approx(0.3 * 0.25 + 0.7 * 10.0 - 2.1**2, abs=0.05)


def test_unknown_system_is_one_line_error():
    with pytest.raises(PitaInputError, match="unknown system 'water'") as exc:
        systems.load("water")
    assert "\n" not in str(exc.value)
