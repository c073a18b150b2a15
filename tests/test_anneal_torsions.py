"""Torsion moves inside the anneal (anneal.torsion_moves): exact moves on the model's density.

The toy is a four-atom chain 0-1-2-3 in 3-D (mean-free, 9 dimensions) whose "model" energy at sigma_min
is three bond springs plus a two-well dihedral potential V(phi) about the bond 1-2 (wells at phi = +-90
deg, barrier 6 at 0 and 180 deg, the -90 deg well deeper by 1). Rotating atom 3 about the 1-2 axis is a
volume-preserving bijection that keeps the springs and shifts phi, so under exp(-gamma E(., sigma_min))
phi has the density exp(-gamma V(phi)) / Z exactly: the weight of the deeper well is a 1-D integral.
Along the sigma path the energy blends into a Gaussian, E = lam(sigma) |x|^2 / (2 (1 + sigma^2)) +
(1 - lam(sigma)) E_mol, lam linear from 1 at sigma 2 to 0 at sigma_min (the anneal's weights are exact for any family).

Local MALA steps (small, few) rarely cross the barrier once it has formed, so where the wells' shares
change along the path (gamma 1.5 tilts them) only the weights or the torsion moves can move mass. With
torsion moves the weighted share must match the integral; moves that target exp(-E) instead of
exp(-gamma E) (acceptance without gamma) must not.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import pita.fksmc as fksmc
from pita.fksmc import anneal
from pita.torsions import TorsionMoves

GAMMA = 1.5
SCHED = dict(sigma_min=0.05, sigma_max=5.0, rho=7.0)
BARRIER, TILT = 6.0, 0.5


def dihedral(p: torch.Tensor) -> torch.Tensor:
    """Dihedral angle 0-1-2-3 of positions (B, 4, 3), in (-pi, pi]."""
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1n = b1 / b1.norm(dim=-1, keepdim=True)
    v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
    w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
    return torch.atan2((torch.cross(b1n, v, dim=-1) * w).sum(-1), (v * w).sum(-1))


def potential(phi):
    """Two wells at +-90 deg, barrier BARRIER, the -90 deg well lower by 2 TILT."""
    return 0.5 * BARRIER * (1.0 + torch.cos(2.0 * phi)) + TILT * torch.sin(phi)


class DihedralChain:
    n_atoms, mean_free, dim = 4, True, 12
    sigma_min, sigma_max, rho = SCHED["sigma_min"], SCHED["sigma_max"], SCHED["rho"]

    def parameters(self):
        return iter([torch.zeros(1, dtype=torch.float64)])

    def energy(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        p = x.reshape(x.shape[0], 4, 3)
        bonds = sum(4.0 * ((p[:, i + 1] - p[:, i]).norm(dim=-1) - 1.0) ** 2 for i in range(3))
        mol = bonds + potential(dihedral(p))
        lam = ((sigma - self.sigma_min) / (2.0 - self.sigma_min)).clamp(0.0, 1.0)  # Gaussian above sigma 2
        return lam * (x * x).sum(-1) / (2.0 * (1.0 + sigma ** 2)) + (1.0 - lam) * mol


def exact_share(gamma: float) -> float:
    """Weight of phi < 0 (the deeper well) under exp(-gamma V(phi))."""
    phi = torch.linspace(-math.pi, math.pi, 200001, dtype=torch.float64)[:-1]
    w = torch.exp(-gamma * potential(phi))
    return float(w[phi < 0].sum() / w.sum())


TORSIONS = TorsionMoves([(1, 2, np.array([3]))], n_atoms=4)


def weighted_share(seed: int, torsion_moves: int, **kw) -> float:
    r = anneal(DihedralChain(), GAMMA, 4000, 40, weights="ais", mala_steps=2, resample_threshold=0.5,
               torsions=TORSIONS, torsion_moves=torsion_moves, torsion_sigma_max=1.0, dtype=torch.float64,
               seed=seed, **{**SCHED, **kw})
    w = np.exp(r.log_weight - r.log_weight.max())
    left = (dihedral(r.x.reshape(-1, 4, 3)) < 0).numpy()
    return float((w * left).sum() / w.sum())


def test_reference_is_not_trivial():
    """gamma 1.5 moves the deeper well's share from 0.72 to 0.81: moves targeting gamma 1 would show."""
    assert exact_share(GAMMA) - exact_share(1.0) > 0.08


@pytest.mark.parametrize("path", ["constant", "temper_at_sigma_min"])
def test_torsion_moves_keep_the_anneal_exact(monkeypatch, path):
    """Mean over three seeds (4000 particles) within 0.015 of the exact share, on the constant path (the
    moves end each sigma level) and on the tempering path (gamma 1 down the sigma path, then tempering at
    sigma_min, where the MALA moves of the next level read the gradient the torsion moves refreshed).
    Moves that ignore gamma land near gamma 1's share (0.72) and fail."""
    kw = {} if path == "constant" else dict(gamma_path=path, temper_mala_steps=2)
    exact = exact_share(GAMMA)
    ok = np.mean([weighted_share(s, 4, **kw) for s in (0, 1, 2)])
    assert abs(ok - exact) < 0.015, (ok, exact)
    monkeypatch.setattr(fksmc, "torsion_log_acceptance", lambda g, e, ey: (e.double() - ey.double()))
    bad = np.mean([weighted_share(s, 4, **kw) for s in (0, 1, 2)])
    assert abs(bad - exact) > 0.04, (bad, exact)


def test_torsion_moves_are_recorded_and_checked():
    r = anneal(DihedralChain(), GAMMA, 200, 20, weights="ais", mala_steps=1, resample_threshold=0.5,
               torsions=TORSIONS, torsion_moves=2, torsion_sigma_max=0.5, dtype=torch.float64, seed=0, **SCHED)
    trace = r.settings["torsion_acceptance_trace"]
    assert r.settings["torsion_moves"] == 2 and r.settings["torsion_levels"] == len(trace) > 0
    assert all(s <= 0.5 and g == GAMMA and 0.0 <= a <= 1.0 for s, g, a in trace)
    # the moves keep the particles mean-free
    assert r.x.reshape(-1, 4, 3).mean(1).abs().max() < 1e-9
    with pytest.raises(ValueError, match="torsions"):
        anneal(DihedralChain(), GAMMA, 10, 5, weights="ais", torsion_moves=1, seed=0, **SCHED)
    with pytest.raises(ValueError, match="torsion_moves need moves"):
        anneal(DihedralChain(), GAMMA, 10, 5, weights="discrete", torsions=TORSIONS, torsion_moves=1, seed=0,
               **SCHED)


def test_pipeline_anneal_makes_torsion_moves_on_a_molecule_only(caplog, tmp_path):
    """`pita.steps.anneal` builds the moves from the system's topology (alanine dipeptide: 7 rotatable
    bonds) and records them; a cluster without bonds (LJ-13) makes none and says so, as relax does."""
    from pita import KB_KJ_PER_MOL_K
    from pita.models import PitaModel, save_checkpoint
    from pita.settings import AnnealSettings
    from pita.steps import anneal as anneal_step
    from pita.systems import load

    torch.manual_seed(0)
    settings = AnnealSettings(n_particles=16, n_steps=6, weights="ais", mala_steps=1, torsion_moves=2,
                              torsion_sigma_max=100.0)
    for name, dim, n_atoms, made in (("alanine_dipeptide", 66, 22, True), ("lj13", 39, 13, False)):
        system = load(name)
        model = PitaModel({"dim": dim, "n_atoms": n_atoms, "temperature": 1200.0, "sd": 1.0, "sigma_min": 0.01,
                           "sigma_max": 17.0, "length_scale": float(system.length_scale), "units": system.units,
                           "kB": KB_KJ_PER_MOL_K, "system": {"name": name},
                           "backbone_options": {"hidden": 16, "layers": 2, "embedding": 8}})
        checkpoint = save_checkpoint(tmp_path / f"{name}.pt", model)
        caplog.clear()
        out, diagnostics = anneal_step(model, system, 600.0, settings, checkpoint=str(checkpoint), seed=0)
        recorded = diagnostics["settings"]
        if made:
            assert recorded["torsion_moves"] == 2 and recorded["torsion_levels"] == 6
            assert len(out.energy) == 16
        else:
            assert recorded["torsion_moves"] == 0 and "torsion_levels" not in recorded
            assert "no rotatable bond" in caplog.text
