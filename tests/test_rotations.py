"""Rotations and exact weights: a model of Kabsch-aligned data against a rotation-uniform target.

Toy with a known density: three atoms in 3-D whose mean-free density is a Gaussian of width s
around a scalene triangle, smeared uniformly over SO(3):

    pi(x) = int_SO(3) N(x; R mu, s^2 P) dR  ~  (1/M) sum_m N(x; R_m mu, s^2 P),

with M = 256 super-Fibonacci rotations (E(R x) - E(x) has sd ~0.05 over samples and random R:
rotation-uniform for every purpose here). Its exact diffusion is the same mixture with
variance s^2 + sigma^2, so E(x, sigma) = -log pi_sigma(x) and its score are analytic.

Kabsch alignment to a reference mu puts every configuration on the linear slice
sum_i a_i x mu_i = 0 (three constraints: the optimality condition of the rotation), so a model of
aligned data has (near) zero width in the three rotational directions. Used as the proposal for
the rotation-uniform target, its log-weights contain +chi-square(3)/2 in those directions
(exp of it has no finite mean), whatever the width the model gives them: the final ESS
collapses and gets worse with more particles. Measured (N = 500, 200 steps, PITA drift,
Hutchinson divergence, threshold 0.5, gamma = 1, seeds 0-2): exact model final ESS/N 0.875-0.889;
aligned-frame model (a Gaussian fit to 20000 aligned samples, exact diffusion) 0.004-0.032 with
a path ESS/N of 0.85-0.98 (the collapse is in the final correction). Direct samples of the aligned model: ESS/N 0.049, 0.032,
0.0017 for 100, 1000, 10000 samples.

Exact treatment: random proper rotations of the training data (pita.training, align: none,
random_rotations: true): R a for aligned a and Haar R is distributed as pi again, so the model
learns the rotation-uniform density (the exact model above). Alignment stays available
(align: reference / auto) but then the weights are not exact.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from pita.coords import align_to_reference, kabsch_rotations, random_rotations, remove_mean
from pita.fksmc import anneal, ess
from pita.samples import SampleSet
from pita.systems.base import System

SHAPE = torch.tensor([[0.0, 0.0, 0.0], [1.4, 0.0, 0.0], [0.3, 1.1, 0.0]], dtype=torch.float64)
SHAPE = SHAPE - SHAPE.mean(0)
N_ATOMS, D = 3, 9
D_EFF = D - 3
S = 0.5
N_ROT = 256
SIGMA_MIN = 0.01
FKSMC = dict(dtype=torch.float64, sigma_min=SIGMA_MIN, sigma_max=4.0, rho=7.0)


def fibonacci_rotations(n: int) -> torch.Tensor:
    """n well-spread rotations (n, 3, 3): super-Fibonacci spiral on the unit quaternions (Alexa, CVPR 2022)."""
    phi, psi = math.sqrt(2.0), 1.533751168755204288118041
    s = torch.arange(n, dtype=torch.float64) + 0.5
    r, rr = torch.sqrt(s / n), torch.sqrt(1 - s / n)
    a, b = 2 * math.pi * s / phi, 2 * math.pi * s / psi
    w, x, y, z = r * torch.sin(a), r * torch.cos(a), rr * torch.sin(b), rr * torch.cos(b)
    return torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)


def rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    return (x.reshape(-1, N_ATOMS, 3) @ rot.transpose(1, 2)).reshape(x.shape)


class SmearedTriangle:
    """The exact (rotation-uniform) diffusion model of the toy: mixture of N(R_m mu, (s^2 + sigma^2) P)."""

    mean_free, n_atoms, dim = True, N_ATOMS, D

    def __init__(self):
        self.centres = rotate(SHAPE.reshape(1, -1).expand(N_ROT, -1), fibonacci_rotations(N_ROT))  # (M, D)

    def _logits(self, x, sigma):
        v = S**2 + sigma.reshape(-1, 1) ** 2
        d2 = (x * x).sum(-1, keepdim=True) - 2 * x @ self.centres.T + (self.centres**2).sum(-1)
        return -d2 / (2 * v), v

    def energy(self, x, sigma):
        logits, v = self._logits(x, sigma)
        return -torch.logsumexp(logits, -1) + math.log(N_ROT) + 0.5 * D_EFF * torch.log(2 * math.pi * v[:, 0])

    def score(self, x, sigma):
        logits, v = self._logits(x, sigma)
        return -(x - torch.softmax(logits, -1) @ self.centres) / v

    def sample(self, n, generator):
        idx = torch.randint(N_ROT, (n,), generator=generator)
        eps = remove_mean(torch.randn(n, D, generator=generator, dtype=torch.float64), N_ATOMS)
        return self.centres[idx] + S * eps


EXACT = SmearedTriangle()


class TriangleSystem(System):
    """U = -log pi (k_B = 1, T = 1, L = 1); reference_positions: the triangle (alignment target)."""

    name, units, kB, n_atoms, length_scale, mean_free = "smeared_triangle", "reduced", 1.0, N_ATOMS, 1.0, True

    def __init__(self):
        super().__init__()
        self.reference_positions = SHAPE.numpy().copy()

    def _energy(self, x):
        flat = remove_mean(x.reshape(x.shape[0], -1).double(), N_ATOMS)
        return EXACT.energy(flat, torch.zeros(x.shape[0], dtype=torch.float64)).to(x.dtype)


def subspace_basis() -> torch.Tensor:
    """Orthonormal basis (D, D - 3) of the mean-free subspace."""
    p = torch.eye(D, dtype=torch.float64) - torch.kron(torch.full((N_ATOMS, N_ATOMS), 1.0 / N_ATOMS, dtype=torch.float64),
                                                        torch.eye(3, dtype=torch.float64))
    evals, evecs = torch.linalg.eigh(p)
    return evecs[:, evals > 0.5]


class AlignedFrameModel:
    """The density of the aligned data as a model: a Gaussian N(m, C) fitted to Kabsch-aligned
    samples of pi (C on the mean-free subspace, with three ~zero eigenvalues: the rotational
    directions), diffused exactly: N(m, C + sigma^2 P)."""

    mean_free, n_atoms, dim = True, N_ATOMS, D

    def __init__(self, aligned: torch.Tensor):
        self.q = subspace_basis()
        self.mean = aligned.mean(0)
        self.lam, self.vec = torch.linalg.eigh(torch.cov((aligned @ self.q).T))  # ascending

    def _z(self, x):
        return ((x - self.mean) @ self.q) @ self.vec

    def energy(self, x, sigma):
        var = self.lam.clamp_min(0) + sigma.reshape(-1, 1) ** 2
        z = self._z(x)
        return 0.5 * (z * z / var).sum(-1) + 0.5 * torch.log(2 * math.pi * var).sum(-1)

    def score(self, x, sigma):
        var = self.lam.clamp_min(0) + sigma.reshape(-1, 1) ** 2
        return -((self._z(x) / var) @ self.vec.T) @ self.q.T

    def sample(self, xi, sigma):
        """Samples at noise level sigma from standard normal coordinates xi (n, D - 3)."""
        return self.mean + ((xi * torch.sqrt(self.lam.clamp_min(0) + sigma**2)) @ self.vec.T) @ self.q.T


def aligned_samples(n=20000, seed=1):
    x = EXACT.sample(n, torch.Generator().manual_seed(seed))
    return align_to_reference(x.reshape(n, N_ATOMS, 3), SHAPE).reshape(n, -1)


def kabsch_residual(x: torch.Tensor) -> torch.Tensor:
    """sum_i x_i x mu_i per configuration (B, 3): zero on the aligned slice."""
    return torch.linalg.cross(x.reshape(-1, N_ATOMS, 3), SHAPE.expand(x.shape[0], -1, -1), dim=-1).sum(1)


def orientation_stats(x: torch.Tensor):
    """Mean unit vector from the centroid to atom 0, and the mean configuration: both 0 when rotation-uniform."""
    v = x.reshape(-1, N_ATOMS, 3)[:, 0]
    return (v / v.norm(dim=-1, keepdim=True)).mean(0), x.mean(0)


# ---------------------------------------------------------------------------------------------
def test_toy_is_rotation_uniform_and_exact():
    g = torch.Generator().manual_seed(5)
    x = EXACT.sample(2000, g)
    zero = torch.zeros(2000, dtype=torch.float64)
    d_e = EXACT.energy(rotate(x, random_rotations(2000, generator=g, dtype=torch.float64)), zero) - EXACT.energy(x, zero)
    assert float(d_e.std()) < 0.1, float(d_e.std())
    unit, mean = orientation_stats(x)
    assert float(unit.norm()) < 0.06 and float(mean.abs().max()) < 0.06
    # the score is -grad E
    sig = torch.full((50,), 0.3, dtype=torch.float64)
    xr = x[:50].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(EXACT.energy(xr, sig).sum(), xr)
    torch.testing.assert_close(EXACT.score(x[:50], sig), -grad)


def test_aligned_data_live_on_a_slice_and_random_rotations_restore_pi():
    a = aligned_samples(5000)
    assert float(kabsch_residual(a).abs().max()) < 1e-10  # three linear constraints: one frame
    cov = torch.linalg.eigvalsh(torch.cov((a @ subspace_basis()).T))
    assert float(cov[:3].abs().max()) < 1e-10 and float(cov[3:].min()) > 0.1
    unit, mean = orientation_stats(a)
    assert float(unit.norm()) > 0.5  # a preferred orientation
    # augmentation: R a with Haar R is distributed as pi again (rotation-uniform)
    g = torch.Generator().manual_seed(2)
    ra = rotate(a, random_rotations(len(a), generator=g, dtype=torch.float64))
    unit_r, mean_r = orientation_stats(ra)
    assert float(unit_r.norm()) < 0.05 and float(mean_r.abs().max()) < 0.05
    assert float(kabsch_residual(ra).abs().mean()) > 0.3


def test_aligned_model_log_weights_carry_chi_square_3_half():
    """Direct samples of the aligned-frame model at sigma_min: log w = -U + E_q = 0.5 |xi_rot|^2
    + (terms independent of the three rotational coordinates): slope 1 on a chi-square(3)/2."""
    model = AlignedFrameModel(aligned_samples())
    g = torch.Generator().manual_seed(3)
    n = 20000
    xi = torch.randn(n, D_EFF, generator=g, dtype=torch.float64)
    x = model.sample(xi, SIGMA_MIN)
    log_w = -TriangleSystem().energy(x.reshape(n, N_ATOMS, 3)) + model.energy(x, torch.full((n,), SIGMA_MIN,
                                                                                            dtype=torch.float64))
    chi = 0.5 * (xi[:, :3] ** 2).sum(-1)  # the three smallest eigenvalues: the rotational directions
    assert float(model.lam[:3].abs().max()) < 1e-10
    lw, c = (log_w - log_w.mean()).numpy(), (chi - chi.mean()).numpy()
    slope = float((lw * c).mean() / (c * c).mean())
    assert 0.9 < slope < 1.1, slope  # measured 1.01
    assert abs(float(np.var(c)) - 1.5) < 0.1  # var of chi-square(3)/2
    # heavy tail: the ESS fraction falls as the sample grows (measured 0.049, 0.032, 0.0017)
    fractions = [ess(log_w[:m]) / m for m in (100, 1000, 10000)]
    assert fractions[2] < 0.01 and fractions[2] < fractions[0] / 5, fractions


def test_fksmc_exact_model_vs_aligned_frame_model():
    """The proof: FK-SMC with the exact rotation-uniform energy and score keeps ESS/N near 1
    after the final correction to the system; the aligned-frame density used as if it were
    the target collapses (the pipeline's anneal settings: PITA drift, Hutchinson, threshold 0.5)."""
    system = TriangleSystem()
    kw = dict(seed=0, divergence_method="hutchinson", resample_threshold=0.5, system=system, temperature=1.0, **FKSMC)
    exact = anneal(EXACT, 1.0, 500, 200, **kw)
    aligned = anneal(AlignedFrameModel(aligned_samples()), 1.0, 500, 200, **kw)
    fraction = lambda r: r.ess_final / len(r.log_weight)  # noqa: E731
    assert fraction(exact) > 0.8, fraction(exact)  # measured 0.89
    assert fraction(aligned) < 0.1, fraction(aligned)  # measured 0.004
    assert aligned.ess_path / len(aligned.log_weight) > 5 * fraction(aligned)  # the final correction collapses it


@pytest.mark.slow
@pytest.mark.parametrize("gamma,drift,threshold", [(1.0, "pita", 0.0), (1.5, "tempered", 0.5)])
def test_fksmc_exact_model_continuous_exact_divergence(gamma, drift, threshold):
    """Exact divergence and the left-point time derivative. At gamma = 1 the exact model's
    weights are nearly constant (measured ESS/N 0.996, aligned 0.007); annealing to gamma = 1.5
    with the tempered drift and no resampling on the way keeps the exact model's ESS/N high
    (0.98; aligned 0.007)."""
    system = TriangleSystem()
    kw = dict(seed=0, time_derivative="autograd", drift=drift, resample_threshold=threshold, system=system,
              temperature=1.0 / gamma, **FKSMC)
    exact = anneal(EXACT, gamma, 500, 50, **kw)
    aligned = anneal(AlignedFrameModel(aligned_samples()), gamma, 500, 50, **kw)
    assert exact.ess_final / 500 > 0.8 and aligned.ess_final / 500 < 0.1, (exact.ess_final, aligned.ess_final)


# ---------------------------------------------------------------------------------------------
def _training_set(n=400, seed=4):
    system = TriangleSystem()
    x = EXACT.sample(n, torch.Generator().manual_seed(seed)).reshape(n, N_ATOMS, 3)
    e, f = system.energy_and_forces(x)
    attrs = dict(system=system.name, temperature=1.0, units="reduced", length_scale=1.0, n_energy_evals=n,
                 n_energy_evals_total=n)
    return system, SampleSet(positions=x.numpy().astype(np.float32), energy=e.detach().numpy(),
                             forces=f.detach().numpy().astype(np.float32), attrs=attrs)


def _trainer(align: str | None):
    from pita.training import train

    system, data = _training_set()
    seen = []
    config = {"steps": 2, "batch_size": 256,
              "model": {"backbone": "mlp", "backbone_options": {"hidden": 16, "layers": 2, "embedding": 8}}}
    if align is not None:  # None: the defaults of align and random_rotations
        config.update(align=align, random_rotations=True)
    train([data], system, config=config, device="cpu", seed=0, progress=False, stop_after=1,
          callback=seen.append)
    return seen[0]


def test_training_rotation_augmentation_gives_rotation_uniform_batches():
    """align: none + random_rotations: batches are rotation-uniform and the forces turn with
    the positions (grad(U/kT) at the rotated configuration)."""
    trainer = _trainer("none")
    assert trainer.rotate and not trainer.data.aligned
    batches = [trainer.sample_batch() for _ in range(20)]
    x0 = torch.cat([b["x0"] for b in batches]).double()
    unit, mean = orientation_stats(x0)
    assert float(unit.norm()) < 0.06 and float(mean.abs().max()) < 0.06
    # each (x0, grad) pair is a data pair (x_i, g_i) turned by one proper rotation R
    b = batches[0]
    x0, g0 = b["x0"].double().reshape(-1, N_ATOMS, 3), b["grad"].double().reshape(-1, N_ATOMS, 3)
    data_x = trainer.data.x.double().reshape(-1, N_ATOMS, 3)
    data_g = trainer.data.reduced_energy_grad.double().reshape(-1, N_ATOMS, 3)
    source = torch.cdist(_distances(x0), _distances(data_x)).argmin(1)
    xs, gs = data_x[source], data_g[source]
    rot = torch.stack([kabsch_rotations(xs[i:i + 1], x0[i])[0] for i in range(len(x0))])  # x0 = xs R^T
    torch.testing.assert_close(xs @ rot.transpose(1, 2), x0, rtol=0, atol=1e-5)  # same configuration, turned
    torch.testing.assert_close(gs @ rot.transpose(1, 2), g0, rtol=1e-4, atol=1e-4)


def _distances(x: torch.Tensor) -> torch.Tensor:
    """The three interatomic distances (B, 3): rotation invariant, identify a configuration."""
    return torch.stack([(x[:, i] - x[:, j]).norm(dim=-1) for i, j in ((0, 1), (0, 2), (1, 2))], -1)


def test_training_alignment_keeps_one_frame(caplog):
    """align: reference (the option kept for experiments): every batch sits on the aligned slice,
    random rotations are off; a model of it is the aligned-frame model above, and training says so."""
    with caplog.at_level(logging.WARNING, logger="pita.training"):
        trainer = _trainer("reference")
    assert any("not exact" in r.getMessage() for r in caplog.records)
    assert trainer.data.aligned and not trainer.rotate
    x0 = trainer.sample_batch()["x0"].double()
    assert float(kabsch_residual(x0).abs().max()) < 1e-4


def test_default_training_of_a_molecule_is_rotation_uniform():
    """With the defaults, a non-equivariant backbone on a molecule with a reference structure
    sees rotation-uniform batches (random proper rotations, no alignment): exact weights."""
    trainer = _trainer(None)
    assert trainer.rotate and not trainer.data.aligned
