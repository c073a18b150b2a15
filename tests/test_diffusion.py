import math

import pytest
import torch

from pita.diffusion import (EDMSchedule, LogNormalSigma, LogUniformSigma, SigmaMixture, estimate_sigma_max,
                            measure_sd)


@pytest.fixture
def schedule():
    return EDMSchedule(sigma_min=0.01, sigma_max=17.0, rho=7.0)


def test_endpoints(schedule):
    assert float(schedule.sigma(0.0)) == pytest.approx(0.01, rel=1e-12)
    assert float(schedule.sigma(1.0)) == pytest.approx(17.0, rel=1e-12)


def test_inverse(schedule):
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    assert torch.allclose(schedule.t_of_sigma(schedule.sigma(t)), t, atol=1e-12)
    sig = torch.exp(torch.linspace(math.log(0.01), math.log(17.0), 50, dtype=torch.float64))
    assert torch.allclose(schedule.sigma(schedule.t_of_sigma(sig)), sig, rtol=1e-12)


def test_sigma_increasing(schedule):
    s = schedule.sigma(torch.linspace(0, 1, 1000, dtype=torch.float64))
    assert bool((s[1:] > s[:-1]).all())


def test_g2_matches_finite_difference(schedule):
    t = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    h = 1e-6
    fd = (schedule.sigma(t + h) ** 2 - schedule.sigma(t - h) ** 2) / (2 * h)
    assert torch.allclose(schedule.g2(t), fd, rtol=1e-6)


def test_path_statistics_match_design(schedule):
    # docs/METHOD.md, section 3: with uniform steps in t, 29% of steps above sigma = 4 and 14% below 0.05
    t = (torch.arange(100000, dtype=torch.float64) + 0.5) / 100000
    s = schedule.sigma(t)
    assert float((s > 4).double().mean()) == pytest.approx(0.29, abs=0.01)
    assert float((s < 0.05).double().mean()) == pytest.approx(0.14, abs=0.01)


def test_sigma_samplers():
    g = torch.Generator().manual_seed(0)
    ln = LogNormalSigma(-1.2, 1.2)(200000, g)
    assert float(torch.log(ln).mean()) == pytest.approx(-1.2, abs=0.02)
    assert float(torch.log(ln).std()) == pytest.approx(1.2, abs=0.02)
    lu = LogUniformSigma(0.01, 17.0)(200000, g)
    assert float(lu.min()) >= 0.01 and float(lu.max()) <= 17.0
    assert float(torch.log(lu).mean()) == pytest.approx((math.log(0.01) + math.log(17.0)) / 2, abs=0.02)
    mix = SigmaMixture(LogNormalSigma(-1.2, 1.2), LogUniformSigma(0.01, 17.0), 0.5)(200000, g)
    # the mixture reaches high sigma far more often than the lognormal alone
    assert float((mix > 4).float().mean()) > 2 * float((ln > 4).float().mean())
    # same generator state, same draws
    a = SigmaMixture(LogNormalSigma(), LogUniformSigma(0.01, 10.0))(10, torch.Generator().manual_seed(3))
    b = SigmaMixture(LogNormalSigma(), LogUniformSigma(0.01, 10.0))(10, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_data_helpers():
    x = torch.zeros(4, 6)
    x[0, 0] = 3.0
    assert estimate_sigma_max(x, 2) == pytest.approx(6.0)
    g = torch.Generator().manual_seed(0)
    y = 0.7 * torch.randn(20000, 5, 3, generator=g)
    y = (y - y.mean(1, keepdim=True)).reshape(20000, -1)
    assert measure_sd(y, 5) == pytest.approx(0.7, rel=0.02)


def test_bad_schedule():
    with pytest.raises(ValueError):
        EDMSchedule(sigma_min=1.0, sigma_max=0.5)
