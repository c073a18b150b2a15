import math

import pytest
import torch

from pita.coords import random_rotations, remove_mean
from pita.errors import PitaInputError
from pita.losses import DenoisingScoreMatching, EnergyDistillation, EnergyMatching, TargetScore
from pita.models import PitaModel, load_checkpoint, save_checkpoint

N_ATOMS = 5
SMALL = {
    "mlp": {"hidden": 32, "layers": 2, "embedding": 16},
    "transformer": {"width": 16, "layers": 2, "heads": 2},
    "egnn": {"hidden": 16, "layers": 2},
}


def make_model(backbone="mlp", n_atoms=N_ATOMS, beta_conditioning=False, score_source="score", seed=0):
    torch.manual_seed(seed)
    dim = 3 * n_atoms if n_atoms else 2
    return PitaModel({
        "dim": dim, "n_atoms": n_atoms, "sd": 0.8, "temperature": 300.0, "sigma_min": 0.01, "sigma_max": 8.0,
        "backbone": backbone, "backbone_options": SMALL[backbone], "beta_conditioning": beta_conditioning,
        "score_source": score_source, "length_scale": 0.2, "system": {"name": "test"},
    }).double()


def perturb(model, scale=0.3, seed=1):
    """Random non-zero weights everywhere (output layers start at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def particles(b=6, n=N_ATOMS, seed=0):
    g = torch.Generator().manual_seed(seed)
    return remove_mean(torch.randn(b, 3 * n, generator=g, dtype=torch.float64), n)


def rotate(x, rot, n=N_ATOMS):
    return (x.reshape(x.shape[0], n, 3) @ rot.transpose(-1, -2)).reshape(x.shape[0], -1)


@pytest.mark.parametrize("backbone", ["mlp", "transformer", "egnn"])
def test_shapes_and_mean_free(backbone):
    model = perturb(make_model(backbone))
    x = particles()
    sigma = torch.full((6,), 0.5, dtype=torch.float64)
    e = model.energy(x, sigma)
    s = model.score(x, sigma)
    se = model.energy_score(x, sigma)
    assert e.shape == (6,) and s.shape == (6, 3 * N_ATOMS) and se.shape == (6, 3 * N_ATOMS)
    for v in (s, se, model.denoise(x, sigma)):
        assert torch.allclose(v.reshape(6, N_ATOMS, 3).sum(1), torch.zeros(6, 3, dtype=v.dtype), atol=1e-10)
    # translation invariance (inputs are projected onto the mean-free subspace)
    shifted = x + torch.tensor([0.3, -1.0, 2.0], dtype=x.dtype).repeat(N_ATOMS)
    assert torch.allclose(model.energy(shifted, sigma), e, atol=1e-10)
    # a float sigma broadcasts
    assert torch.allclose(model.energy(x, 0.5), e)


@pytest.mark.parametrize("backbone", ["mlp", "transformer", "egnn"])
def test_energy_score_equals_score_at_init(backbone):
    """Zero output layers: D = D_E = c_skip x, so -grad E is the score model's score."""
    model = make_model(backbone)
    x = particles()
    for sig in (0.01, 0.3, 5.0):
        sigma = torch.full((6,), sig, dtype=torch.float64)
        assert torch.allclose(model.energy_score(x, sigma), model.score(x, sigma), rtol=1e-10, atol=1e-10)
        c_skip = 0.8**2 / (sig**2 + 0.8**2)
        assert torch.allclose(model.denoise(x, sigma), c_skip * x)


def test_egnn_equivariance():
    model = perturb(make_model("egnn"))
    x = particles()
    sigma = torch.full((6,), 0.7, dtype=torch.float64)
    rot = random_rotations(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    reflect = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)).expand(6, 3, 3)
    shift = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64).repeat(N_ATOMS)
    d, e = model.denoise(x, sigma), model.energy(x, sigma)
    assert d.abs().max() > 1e-3 and e.std() > 1e-3  # non-trivial outputs
    for q in (rot, reflect, rot @ reflect):
        xq = rotate(x, q) + shift
        assert torch.allclose(model.denoise(xq, sigma), rotate(d, q), atol=1e-9)
        assert torch.allclose(model.energy(xq, sigma), e, atol=1e-9)
        assert torch.allclose(model.energy_score(xq, sigma), rotate(model.energy_score(x, sigma), q), atol=1e-8)


def test_transformer_is_not_equivariant_by_construction():
    """The transformer learns rotation symmetry from random rotations in training; check it is not built in."""
    model = perturb(make_model("transformer"))
    x = particles()
    sigma = torch.full((6,), 0.7, dtype=torch.float64)
    rot = random_rotations(6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert not torch.allclose(model.energy(rotate(x, rot), sigma), model.energy(x, sigma), atol=1e-6)


def test_beta_conditioning():
    model = perturb(make_model("mlp", beta_conditioning=True))
    x = particles()
    e300 = model.energy(x, 0.1)
    assert torch.allclose(e300, model.energy(x, 0.1, temperature=300.0))
    assert not torch.allclose(e300, model.energy(x, 0.1, temperature=600.0))
    plain = make_model("mlp")
    with pytest.raises(ValueError):
        plain.energy(x, 0.1, temperature=600.0)


def test_score_source_energy():
    model = perturb(make_model("mlp", score_source="energy"))
    x = particles()
    assert torch.allclose(model.score(x, 0.4), model.energy_score(x, 0.4))
    # differentiable in x when x requires grad (divergence of the score)
    xr = x.clone().requires_grad_(True)
    div = torch.autograd.grad(model.score(xr, 0.4)[:, 0].sum(), xr)[0]
    assert torch.isfinite(div).all()


def test_checkpoint_round_trip(tmp_path):
    model = perturb(make_model("egnn")).float()
    model.config["energy_offset"] = -12.5
    path = save_checkpoint(tmp_path / "m.pt", model, meta={"seed": 3, "n_energy_evals_total": 10})
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["energy_offset"] == -12.5 and payload["meta"]["seed"] == 3
    loaded = load_checkpoint(path, "cpu")
    x = particles().float()
    assert torch.equal(loaded.energy(x, 0.2), model.eval().energy(x, 0.2))
    assert loaded.n_atoms == N_ATOMS and loaded.sd == 0.8 and loaded.temperature == 300.0
    assert loaded.schedule.sigma_max == 8.0 and loaded.meta["n_energy_evals_total"] == 10
    (tmp_path / "bad.pt").write_text("not a checkpoint")
    with pytest.raises(PitaInputError, match="bad.pt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(PitaInputError, match="missing.pt: file not found"):
        load_checkpoint(tmp_path / "missing.pt")


# ---- losses -------------------------------------------------------------------------------
def test_denoising_score_matching():
    loss = DenoisingScoreMatching(sd=0.5)
    x0 = particles()
    sigma = torch.tensor([0.01, 0.1, 0.5, 1.0, 3.0, 10.0], dtype=torch.float64)
    assert torch.equal(loss(x0.clone(), x0, sigma), torch.zeros(6, dtype=torch.float64))
    d = (x0 + 0.1).requires_grad_(True)
    value = loss(d, x0, sigma)
    assert value.shape == (6,) and bool((value > 0).all())
    lam = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    assert torch.allclose(value, lam * 0.01 * x0.shape[1])  # summed over coordinates, as the paper
    (g,) = torch.autograd.grad(value.sum(), d)
    assert torch.allclose(g, 2 * lam.reshape(-1, 1) * 0.1)


def test_energy_distillation_zero_at_matching_denoiser():
    model = perturb(make_model("mlp"))
    loss = EnergyDistillation(sd=0.8)
    x = particles()
    sigma = torch.tensor([0.05, 0.1, 0.5, 1.0, 3.0, 6.0], dtype=torch.float64)
    xr = x.clone().requires_grad_(True)
    _, grad_e = model.energy_model.grad(xr, sigma, create_graph=True)
    d_e = x - sigma.reshape(-1, 1) ** 2 * grad_e
    assert torch.allclose(loss(grad_e, x, sigma, d_e), torch.zeros(6, dtype=torch.float64), atol=1e-20)
    value = loss(grad_e, x, sigma, model.score_model(x, sigma))
    assert bool((value > 0).all())
    # the double backward reaches the energy network, the stop-gradient keeps the score network out
    value.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.energy_model.parameters())
    assert all(p.grad is None for p in model.score_model.parameters())


def test_energy_matching():
    loss = EnergyMatching()
    u = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(loss(u - 5.0, u, 5.0), torch.zeros(3))
    e = (u - 4.0).requires_grad_(True)
    value = loss(e, u, 5.0)
    assert torch.allclose(value, torch.ones(3))
    (g,) = torch.autograd.grad(value.sum(), e)
    assert torch.allclose(g, 2 * torch.ones(3))


def test_target_score():
    loss = TargetScore(max_sigma=0.2)
    x0 = particles()
    g = torch.Generator().manual_seed(1)
    grad_u = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.01, 0.05, 0.1, 0.19, 0.5, 2.0], dtype=torch.float64)
    x_sigma = x0 + sigma.reshape(-1, 1) * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    exact = x_sigma - sigma.reshape(-1, 1) ** 2 * grad_u
    assert torch.equal(loss(exact, x_sigma, sigma, grad_u), torch.zeros(6, dtype=torch.float64))
    value = loss(exact + 0.1, x_sigma, sigma, grad_u)
    assert bool((value[:4] > 0).all()) and bool((value[4:] == 0).all())
