"""The pairnet backbone: an invariant energy over standardised interatomic distances, whose
negative gradient is the score (score_source: energy)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pita.coords import random_rotations, remove_mean
from pita.models import PitaModel, load_checkpoint, save_checkpoint

N_ATOMS = 6


def _model(score_source: str = "energy", atom_types: list[int] | None = None, **options) -> PitaModel:
    torch.manual_seed(0)
    model = PitaModel({"dim": 3 * N_ATOMS, "n_atoms": N_ATOMS, "temperature": 1.0, "sd": 0.7, "sigma_min": 0.01,
                       "atom_types": atom_types,
                       "sigma_max": 5.0, "length_scale": 1.0, "units": "reduced", "kB": 1.0,
                       "system": {"name": "toy"}, "backbone": "pairnet", "score_source": score_source,
                       "backbone_options": {"hidden": 32, "layers": 2, "embedding": 8, **options}})
    data = remove_mean(torch.randn(200, 3 * N_ATOMS), N_ATOMS)
    for net in (model.score_model.network, model.energy_model.network):
        net.set_statistics(data)
    # give the zero-initialised head something to say, so the checks below are not trivial
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.double()


def _rotate(x: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    return (x.reshape(b, N_ATOMS, 3) @ rot.transpose(1, 2)).reshape(b, -1)


@pytest.mark.parametrize("sigma", [0.01, 0.3, 3.0])
def test_energy_is_invariant_and_score_equivariant(sigma):
    model = _model()
    x = remove_mean(torch.randn(5, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS)
    rot = random_rotations(5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    e = model.energy(x, sigma)
    assert torch.allclose(model.energy(_rotate(x, rot), sigma), e, atol=1e-10)  # rotations
    assert torch.allclose(model.energy(-x, sigma), e, atol=1e-10)  # reflections: both enantiomers
    shifted = (x.reshape(5, N_ATOMS, 3) + torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)).reshape(5, -1)
    assert torch.allclose(model.energy(shifted, sigma), e, atol=1e-10)  # translations
    s = model.score(x, sigma)
    assert torch.allclose(model.score(_rotate(x, rot), sigma), _rotate(s, rot), atol=1e-9)
    assert float(e.detach().std()) > 1e-6  # not a constant


@pytest.mark.parametrize("distance_rbf", [0, 8])
@pytest.mark.parametrize("sigma", [0.01, 0.5])
def test_identical_particles_can_be_relabelled(sigma, distance_rbf):
    """One atom type (Lennard-Jones): E must not change under any permutation of the particles, and
    it must still be rotation invariant; distinct atoms (a molecule) keep their labels."""
    x = remove_mean(torch.randn(5, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    permuted = x.reshape(5, N_ATOMS, 3)[:, perm].reshape(5, -1)
    rot = random_rotations(5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    identical = _model(atom_types=[0] * N_ATOMS, distance_rbf=distance_rbf)
    e = identical.energy(x, sigma)
    assert float(e.detach().std()) > 1e-6
    assert torch.allclose(identical.energy(permuted, sigma), e, atol=1e-10)
    assert torch.allclose(identical.energy(_rotate(x, rot), sigma), e, atol=1e-10)
    s = identical.score(x, sigma)
    s_perm = identical.score(permuted, sigma)
    assert torch.allclose(s_perm, s.reshape(5, N_ATOMS, 3)[:, perm].reshape(5, -1), atol=1e-9)
    molecule = _model()
    assert not torch.allclose(molecule.energy(permuted, sigma), molecule.energy(x, sigma), atol=1e-6)


def test_score_is_minus_the_energy_gradient():
    model = _model()
    x = remove_mean(torch.randn(4, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS).requires_grad_(True)
    sigma = 0.2
    (g,) = torch.autograd.grad(model.energy(x, sigma).sum(), x)
    assert torch.allclose(model.score(x.detach(), sigma), -remove_mean(g, N_ATOMS), atol=1e-9)
    # the backbone's own vector output is minus the gradient of its scalar (equivariant by construction)
    net = model.energy_model.network
    u = x.detach()
    c_noise = torch.full((4,), math.log(sigma) / 4, dtype=torch.float64)
    v = u.clone().requires_grad_(True)
    (gs,) = torch.autograd.grad(net.scalar(v, c_noise).sum(), v)
    net.output = "vector"
    try:
        assert torch.allclose(net(u, c_noise), -gs, atol=1e-10)
    finally:
        net.output = "scalar"


def test_statistics_standardise_the_data_and_travel_in_the_checkpoint(tmp_path):
    model = _model()
    net = model.energy_model.network
    x = remove_mean(torch.randn(300, 3 * N_ATOMS, dtype=torch.float64) * 0.5, N_ATOMS)
    net.set_statistics(x)
    d = net.distances(x)
    assert torch.allclose(net.pair_mean, d.mean(0)) and torch.allclose(net.pair_std, d.std(0))
    save_checkpoint(tmp_path / "m.pt", model.float())
    back = load_checkpoint(tmp_path / "m.pt")
    assert torch.allclose(back.energy_model.network.pair_mean, net.pair_mean.float())
    y = x[:3].float()
    assert torch.allclose(back.energy(y, 0.1), model.float().energy(y, 0.1), atol=1e-5)


def test_log_distance_basis_spans_the_data_and_travels_in_the_checkpoint(tmp_path):
    model = _model(atom_types=[0] * N_ATOMS, distance_rbf=8)
    net = model.energy_model.network
    x = remove_mean(torch.randn(300, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS)
    net.set_statistics(x)
    d = net.distances(x)
    lo, hi = net.log_distance_range.tolist()
    assert lo == pytest.approx(math.log(0.9 * float(d.min())), rel=1e-5)
    assert hi == pytest.approx(math.log(float(d.max())), rel=1e-5)
    save_checkpoint(tmp_path / "m.pt", model.float())
    back = load_checkpoint(tmp_path / "m.pt")
    assert torch.allclose(back.energy_model.network.log_distance_range, net.log_distance_range.float())
    y = x[:3].float()
    assert torch.allclose(back.energy(y, 0.1), model.float().energy(y, 0.1), atol=1e-5)
    with pytest.raises(ValueError, match="distance_rbf"):
        _model(distance_rbf=8)  # distinct atoms: each pair already has its own standardisation


def test_log_distance_range_covers_every_frame():
    """Mean and spread come from the first max_frames; the range (and so the core's onset) from every frame:
    a closer pair in a later frame must move d_lo below it."""
    model = _model(atom_types=[0] * N_ATOMS, distance_rbf=8)
    net = model.energy_model.network
    x = remove_mean(torch.randn(300, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS)
    d_first = net.distances(x[:100])
    net.set_statistics(x, max_frames=100)
    assert torch.allclose(net.pair_mean, d_first.reshape(-1).mean().expand_as(net.pair_mean))
    assert net.log_distance_range[0] == pytest.approx(math.log(0.9 * float(net.distances(x).min())), rel=1e-6)
    assert float(net.distances(x).min()) < float(d_first.min())  # the case is not vacuous


@pytest.mark.parametrize("sigma", [0.01, 0.3, 3.0])
def test_overlapping_particles_give_finite_energy_and_score(sigma):
    """Two particles on the same point (an annealed particle can propose it): energy, score and the
    parameter gradients stay finite in float32."""
    model = _model(atom_types=[0] * N_ATOMS, distance_rbf=8).float()
    net = model.energy_model.network
    x = remove_mean(torch.randn(50, 3 * N_ATOMS), N_ATOMS)
    net.set_statistics(x)
    y = x[:4].clone()
    y[:, 3:6] = y[:, 0:3]  # particle 1 on top of particle 0
    s = torch.full((4,), sigma)
    energy = model.energy(y, s)
    score = model.score(y, s)
    assert torch.isfinite(energy).all() and torch.isfinite(score).all()
    energy.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_repulsive_core_acts_only_below_the_data_and_fades_with_noise():
    """As sigma -> 0 the core term is zero at every distance the data hold and grows as a pair closes in below
    0.9 times the shortest one; it fades where noise dominates (the noised density has no sharp core)."""
    model = _model(atom_types=[0] * N_ATOMS, distance_rbf=8)
    net = model.energy_model.network
    x = remove_mean(torch.randn(300, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS)
    net.set_statistics(x)
    net.requires_grad_(False)
    d_data = net.distances(x)
    small = torch.tensor([[1e-10]], dtype=torch.float64)  # sigma^2
    assert float(net._core(torch.log(d_data), small.expand(len(d_data), 1)).abs().max()) == 0.0
    d_lo = 0.9 * float(d_data.min())
    closer = torch.tensor([[0.95 * d_lo], [0.7 * d_lo], [0.3 * d_lo]], dtype=torch.float64)
    core = net._core(torch.log(closer), small.expand(3, 1))
    assert 0 < float(core[0]) < float(core[1]) < float(core[2])
    # at sigma = 1 the smoothed wall hardly tells the overlapping pair from the data's shortest one
    noisy = net._core(torch.log(torch.tensor([[0.3 * d_lo], [d_lo / 0.9]], dtype=torch.float64)),
                      torch.tensor([[1.0]], dtype=torch.float64).expand(2, 1))
    assert float(noisy[0] - noisy[1]) < 0.1 * float(core[2])
    # and the energy sees it: one overlapping pair raises E at sigma_min by the core term
    y = x[:1].clone().reshape(1, N_ATOMS, 3)
    y[0, 1] = y[0, 0] + torch.tensor([0.3 * d_lo, 0.0, 0.0], dtype=torch.float64)
    y = remove_mean(y.reshape(1, -1), N_ATOMS)
    stiffness = float(torch.nn.functional.softplus(net.core_stiffness))
    assert float((model.energy(y, 0.01) - model.energy(x[:1], 0.01)).detach()) > 0.5 * stiffness * math.log(1 / 0.3) ** 2


def test_repulsive_core_is_smooth_at_its_onset_under_noise():
    """At sigma > 0 the core's curvature in log d has no jump at d_lo (a bare max(0, m)^2 wall jumps by
    2 softplus(k) fade there, a Laplacian the heat-equation residual cannot absorb), and as sigma -> 0 it
    is that bare wall."""
    model = _model(atom_types=[0] * N_ATOMS, distance_rbf=8)
    net = model.energy_model.network
    net.set_statistics(remove_mean(1.0 + torch.randn(300, 3 * N_ATOMS, dtype=torch.float64), N_ATOMS))
    net.requires_grad_(False)
    lo = float(net.log_distance_range[0])
    sigma2 = torch.tensor([[0.17**2]], dtype=torch.float64).expand(2, 1)
    log_d = torch.tensor([[lo - 1e-4], [lo + 1e-4]], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(net._core(log_d, sigma2).sum(), log_d, create_graph=True)
    (curvature,) = torch.autograd.grad(grad.sum(), log_d)
    k = float(torch.nn.functional.softplus(net.core_stiffness))
    w2 = ((float(net.log_distance_range[1]) - lo) / 7) ** 2
    bare_jump = 2.0 * k * w2 / (w2 + 2 * 0.17**2 / math.exp(2 * lo))
    assert abs(float(curvature[0, 0] - curvature[1, 0])) < 0.01 * bare_jump
    m = torch.tensor([[0.5], [0.1], [-0.1]], dtype=torch.float64)
    tiny = net._core(lo - m, torch.tensor([[1e-12]], dtype=torch.float64).expand(3, 1))
    assert torch.allclose(tiny, k * torch.clamp(m, min=0).pow(2).squeeze(-1), rtol=1e-6, atol=1e-12)


class _Dimer:
    """Two particles with a stiff harmonic bond at T = 1: U = 50 (r - 1)^2, std of r = 0.1."""

    @staticmethod
    def system():
        from pita.systems.base import System

        class Dimer(System):
            name, units, kB, n_atoms, length_scale, mean_free = "dimer", "reduced", 1.0, 2, 1.0, True
            event_shape, dim = (2, 3), 6

            def energy(self, x):
                x = torch.as_tensor(x).reshape(-1, 2, 3)
                return 50.0 * ((x[:, 0] - x[:, 1]).norm(dim=-1) - 1.0) ** 2

            def spec(self):
                return {"name": "dimer"}

        return Dimer()

    @staticmethod
    def samples(n: int, seed: int = 0, with_forces: bool = True):
        from pita.samples import SampleSet

        rng = np.random.default_rng(seed)
        r = 1.0 + rng.normal(0, 0.1, n)
        u = rng.normal(size=(n, 3))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        pos = np.stack([-0.5 * r[:, None] * u, 0.5 * r[:, None] * u], axis=1)
        f0 = -100.0 * (r - 1.0)[:, None] * u  # -dU/dx_0: pulls atom 0 towards atom 1 when stretched
        forces = np.stack([f0, -f0], axis=1)
        return SampleSet(positions=pos.astype(np.float32), energy=50.0 * (r - 1.0) ** 2,
                         forces=forces.astype(np.float32) if with_forces else None,
                         attrs=dict(system="dimer", temperature=1.0, units="reduced", length_scale=1.0,
                                    n_energy_evals=0, n_energy_evals_total=0, rung=0))


def test_force_matching_alone_fits_the_energy_gradient():
    """With every other loss off, force matching alone must make -grad E(x, sigma_min) the data's
    force on held-out samples (relative error < 0.2); unwired, the gradient is the Gaussian term's
    and the error is about 1."""
    from pita.training import train

    system, ss = _Dimer.system(), _Dimer.samples(2000)
    weights = {"denoising_score_matching": 0.0, "energy_distillation": 0.0, "energy_matching": 0.0,
               "target_score": 0.0, "force_matching": 1.0}
    res = train([ss.subset(np.arange(1600))], system, device="cpu", seed=0, progress=False,
                config={"steps": 300, "batch_size": 128, "holdout_fraction": 0, "fidelity_samples": 0,
                        "loss_weights": weights,
                        "model": {"backbone": "pairnet", "score_source": "energy",
                                  "backbone_options": {"hidden": 32, "layers": 2, "embedding": 8}},
                        "schedule": {"sigma_max": 3.0}})
    held = ss.subset(np.arange(1600, 2000))
    x = remove_mean(torch.as_tensor(held.positions, dtype=torch.float32).reshape(len(held), -1), 2)
    _, grad = res.model.energy_model.grad(x, torch.full((len(held),), res.model.sigma_min))
    target = -torch.as_tensor(held.forces, dtype=torch.float32).reshape(len(held), -1)
    relative = float((grad - target).pow(2).sum() / target.pow(2).sum())
    assert relative < 0.2, relative


def test_energy_only_training_learns_a_harmonic_bond(tmp_path):
    """Two particles with a stiff harmonic bond: pairnet trained by denoising through D_E and energy
    matching recovers U/kT on held-out samples (R^2 > 0.9) and the bond length of its own samples."""
    from pita.fidelity import energy_fidelity
    from pita.training import train

    n = 3000
    system, ss = _Dimer.system(), _Dimer.samples(n, with_forces=False)  # energy matching alone
    res = train([ss.subset(np.arange(2500))], system, device="cpu", seed=0, progress=False,
                config={"steps": 400, "batch_size": 128, "holdout_fraction": 0,
                        "model": {"backbone": "pairnet", "score_source": "energy",
                                  "backbone_options": {"hidden": 32, "layers": 2, "embedding": 8}},
                        "schedule": {"sigma_max": 3.0}})
    held = ss.subset(np.arange(2500, n))
    x = torch.as_tensor(held.positions, dtype=torch.float32).reshape(len(held), -1)
    x = remove_mean(x, 2)
    fid = energy_fidelity(res.model, x, torch.as_tensor(held.energy))
    assert fid["r2"] > 0.9, fid


@pytest.mark.parametrize("weights,divergence,drift", [("discrete", "hutchinson", "pita"), ("continuous", "exact", "pita"),
                                                      ("continuous", "hutchinson", "tempered"),
                                                      ("continuous", "exact", "tempered")])
def test_anneal_does_not_evaluate_an_energy_models_score_twice(weights, divergence, drift):
    """With score_source "energy" in the model, its score is -grad E, which the anneal already has:
    model.score must not be called, and the particles and weights must be those of the explicit
    score_source="energy" path (the same field)."""
    from pita.fksmc import anneal

    model = _model("energy")
    kw = dict(gamma=1.5, n_particles=64, n_steps=20, weights=weights, divergence_method=divergence, seed=3,
              resample_threshold=0.5, drift=drift)
    ref = anneal(model, score_source="energy", **kw)
    calls = []
    original = model.score
    model.score = lambda *a, **k: calls.append(1) or original(*a, **k)
    res = anneal(model, score_source="score", **kw)
    assert not calls
    np.testing.assert_allclose(res.x.numpy(), ref.x.numpy(), rtol=0, atol=1e-9)
    np.testing.assert_allclose(res.log_weight, ref.log_weight, rtol=0, atol=1e-6)


def _dimer_set(r: np.ndarray, stiffness: float, seed: int):
    from pita.samples import SampleSet

    u = np.random.default_rng(seed).normal(size=(len(r), 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pos = np.stack([-0.5 * r[:, None] * u, 0.5 * r[:, None] * u], axis=1)
    f0 = -2.0 * stiffness * (r - 1.0)[:, None] * u
    return SampleSet(positions=pos.astype(np.float32), energy=stiffness * (r - 1.0) ** 2,
                     forces=np.stack([f0, -f0], axis=1).astype(np.float32),
                     attrs=dict(system="dimer", temperature=1.0, units="reduced", length_scale=1.0,
                                n_energy_evals=0, n_energy_evals_total=0, rung=0))


@pytest.mark.parametrize("distance_rbf,bound", [(0, None), (16, 0.05)])
def test_cold_rung_resolves_a_stiff_bond_only_with_the_log_distance_basis(distance_rbf, bound):
    """A warm-started rung keeps the distance statistics of the hot rung 0. With rung-0 distances
    spread over 0.9-6 and a cold rung whose bond is 1 +- 0.02 (U = 2000 (r - 1)^2), force matching
    alone must fit the held-out forces (relative error < 0.05, measured 2e-4) with the log-distance
    basis; the standardised z alone packs the bond into a sliver of one basis function and stays
    far off (measured 0.89: this case documents why lj13.yaml sets distance_rbf)."""
    from pita.training import train

    rng = np.random.default_rng(0)
    system = _Dimer.system()
    weights = {"denoising_score_matching": 0.0, "energy_distillation": 0.0, "energy_matching": 0.0,
               "target_score": 0.0, "force_matching": 1.0}
    options = {"hidden": 32, "layers": 2, "embedding": 8, **({"distance_rbf": distance_rbf} if distance_rbf else {})}

    def config(steps):
        return {"steps": steps, "batch_size": 128, "holdout_fraction": 0, "fidelity_samples": 0,
                "loss_weights": weights, "schedule": {"sigma_max": 3.0},
                "model": {"backbone": "pairnet", "score_source": "energy", "backbone_options": options}}

    hot = _dimer_set(rng.uniform(0.9, 6.0, 2000), 0.0, seed=1)
    rung_0 = train([hot], system, device="cpu", seed=0, progress=False, config=config(1)).model
    cold = _dimer_set(1.0 + rng.normal(0.0, 0.02, 2000), 2000.0, seed=2)
    res = train([cold.subset(np.arange(1600))], system, device="cpu", seed=0, progress=False, config=config(300),
                init=rung_0)
    if distance_rbf:  # the warm start keeps rung 0's range: the cold rung's narrow bond must not reset it
        assert torch.equal(res.model.energy_model.network.log_distance_range,
                           rung_0.energy_model.network.log_distance_range)
    held = cold.subset(np.arange(1600, 2000))
    x = remove_mean(torch.as_tensor(held.positions).reshape(len(held), -1), 2)
    _, grad = res.model.energy_model.grad(x, torch.full((len(held),), res.model.sigma_min))
    target = -torch.as_tensor(held.forces).reshape(len(held), -1)
    relative = float((grad - target).pow(2).sum() / target.pow(2).sum())
    if bound is None:
        assert relative > 0.5, relative
    else:
        assert relative < bound, relative
