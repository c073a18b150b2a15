"""Torsion moves (pita.torsions): which bonds, exact geometry, and the Boltzmann law of a dihedral."""
from __future__ import annotations

import math

import mdtraj
import numpy as np
import pytest
import torch

from pita import systems
from pita.chirality import ChiralityChecker
from pita.relax import _State
from pita.torsions import TorsionMoves, rotatable_bonds


@pytest.fixture(scope="module")
def aldp():
    return systems.load("alanine_dipeptide")


def test_aldp_bonds_are_phi_psi_amides_and_methyl_rotors(aldp):
    moves = TorsionMoves.for_system(aldp)
    names = sorted(moves.names)
    # no bond to a terminal atom (H, O)
    assert names == sorted(["ACE1-C-ACE1-CH3", "ALA2-N-ACE1-C", "ALA2-CA-ALA2-C", "ALA2-CA-ALA2-CB",
                            "ALA2-CA-ALA2-N", "ALA2-C-NME3-N", "NME3-N-NME3-C"]), names
    n_moving = dict(zip(moves.names, moves.moving.sum(1).tolist()))
    assert n_moving["ALA2-CA-ALA2-CB"] == 3 and n_moving["ALA2-CA-ALA2-N"] == 7  # 3 H; the ACE side


def test_rotation_is_rigid_reversible_and_keeps_chirality(aldp):
    moves = TorsionMoves.for_system(aldp)
    x0 = torch.as_tensor(aldp.reference_positions, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    N = 64
    x = x0.expand(N, -1, -1).clone()
    k = torch.randint(len(moves.names), (N,), generator=g)
    delta = (2 * torch.rand(N, generator=g, dtype=torch.float64) - 1) * math.pi
    y = moves.rotate(x, k, delta)
    bonds = np.array([[a.index, b.index] for a, b in aldp.topology.bonds])
    length = lambda z: (z[:, bonds[:, 0]] - z[:, bonds[:, 1]]).norm(dim=-1)  # noqa: E731
    assert torch.allclose(length(y), length(x), atol=1e-12)
    assert torch.allclose(y.mean(1), x.mean(1), atol=1e-12)
    assert (y - x).abs().amax() > 0.05  # it did move
    assert torch.allclose(moves.rotate(y, k, -delta), x, atol=1e-10)
    checker = ChiralityChecker.from_system(aldp)
    assert checker.wrong_fraction(y.numpy()) == 0.0
    assert checker.wrong_fraction((-y).numpy()) == 1.0  # the check itself can fail


def _butane_like():
    top = mdtraj.Topology()
    chain = top.add_chain()
    res = top.add_residue("BUT", chain)
    atoms = [top.add_atom(f"C{i}", mdtraj.element.carbon, res) for i in range(4)]
    for a, b in zip(atoms[:-1], atoms[1:]):
        top.add_bond(a, b)
    return top


def _dihedral(x: torch.Tensor) -> torch.Tensor:
    b0, b1, b2 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 1], x[:, 3] - x[:, 2]
    n1, n2 = torch.cross(b0, b1, dim=-1), torch.cross(b1, b2, dim=-1)
    m1 = torch.cross(n1, b1 / b1.norm(dim=-1, keepdim=True), dim=-1)
    return torch.atan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


def test_metropolis_torsion_moves_sample_the_dihedral_boltzmann_law():
    """A 4-atom chain with U(phi)/kT = 1.5 cos(phi) + 0.8 cos(3 phi) (rigid otherwise): the
    chains' phi must follow exp(-U/kT) (uniform measure in phi), from a start far from it."""
    top = _butane_like()
    bonds = rotatable_bonds(top)
    assert [(b, c) for b, c, _ in bonds] in ([(1, 2)], [(2, 1)])
    moves = TorsionMoves(bonds, 4)
    A, B = 1.5, 0.8
    u = lambda phi: A * torch.cos(phi) + B * torch.cos(3 * phi)  # noqa: E731

    def evaluate(y):
        U = u(_dihedral(y.to(torch.float64)))
        return _State(y, U, torch.zeros_like(y))

    x0 = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.0, 0.0], [0.0, 1.5, 0.0], [1.0, 1.8, 0.1]], dtype=torch.float64)
    N = 4000
    state = evaluate(x0.expand(N, -1, -1).clone())
    g = torch.Generator().manual_seed(1)
    state, stats = moves.run(state, evaluate, 1.0, 40, g)
    assert 0.1 < stats.accept_rate < 0.9
    phi = _dihedral(state.x).numpy()
    grid = np.linspace(-math.pi, math.pi, 20001)
    p = np.exp(-u(torch.as_tensor(grid)).numpy())
    cdf = np.cumsum(p)
    cdf /= cdf[-1]
    emp = np.searchsorted(np.sort(phi), grid) / N
    ks = np.abs(emp - cdf).max()
    assert ks < 1.63 / math.sqrt(N) + 0.005, ks  # 1% KS level for independent chains
    # and a wrong law is rejected by the same statistic
    p_wrong = np.exp(-0.8 * u(torch.as_tensor(grid)).numpy())
    cdf_w = np.cumsum(p_wrong) / p_wrong.sum()
    assert np.abs(emp - cdf_w).max() > 1.63 / math.sqrt(N) + 0.005


def test_relax_moves_never_invert_one_centre_of_a_tripeptide():
    """MALA proposals that flip any chiral centre are rejected (MH on one enantiomer): a
    tripeptide relaxed from strained starts with big steps keeps both centres."""
    from pita.relax import _chirality_guard, _evaluate, SystemPotential, mala

    tri = systems.load("alanine_tripeptide")
    guard = _chirality_guard(tri)
    checker = ChiralityChecker.from_system(tri)
    assert checker.n_centers == 2
    x = torch.as_tensor(tri.reference_positions, dtype=torch.float64)[None].repeat(8, 1, 1)
    ca, _, _, cb = (int(i) for i in checker.centers[1])
    y = x.clone()
    y[:, cb] = 2 * y[:, ca] - y[:, cb]  # CB through CA: inverts the second centre only
    assert not guard(x, y).any() and guard(x, x + 1e-4).all()
    g = torch.Generator().manual_seed(0)
    start = x + 0.02 * torch.randn(x.shape, generator=g, dtype=torch.float64)  # strained
    pot = SystemPotential(tri, 300.0)
    state, _ = mala(_evaluate(start, pot), pot, 30, 4e-4, mean_free=True, generator=g, same_class=guard)
    assert checker.wrong_fraction(state.x.numpy()) == 0.0
