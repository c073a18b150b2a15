"""Umbrella sampling + MBAR (pita/umbrella.py) against densities known in closed form.

The toys are chains of point masses with harmonic bonds and angles and a torsion potential on each
dihedral, nothing else. In internal coordinates the Jacobian of a chain (r^2 sin(angle) per atom)
does not depend on the dihedrals, so the dihedrals' joint marginal is exactly
exp(-sum_d U_d(phi_d) / kT) up to normalisation: a 1-D (or 2-D) integral the test computes on a
fine grid. The wells are separated by barriers of ~10 kT, so plain MD of the same length would
not get their shares right; the restraints and MBAR must.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
pytest.importorskip("pymbar")

from pita.errors import PitaInputError  # noqa: E402
from pita.umbrella import (MBARBasins, UmbrellaSettings, WindowSamples, dihedral, grid_centres,  # noqa: E402
                           reduced_bias, sample_windows)

KB = 0.00831446261815324  # kJ/mol/K
T = 300.0
KT = KB * T
# torsion terms (periodicity, phase, k in kJ/mol) of the two dihedrals: asymmetric wells
TORSIONS = ([(1, 0.0, 6.0), (2, 0.0, 12.0), (3, 0.5, 3.0)],
            [(1, 1.0, 4.0), (2, 0.3, 10.0)])


def torsion_energy(phi, terms):
    return sum(k * (1 + np.cos(n * phi - phase)) for n, phase, k in terms)


def chain_system(n_dihedrals: int):
    """A chain of n_dihedrals + 3 atoms with torsion terms TORSIONS[:n_dihedrals]; start positions."""
    import openmm.unit as u

    n = n_dihedrals + 3
    system = openmm.System()
    for _ in range(n):
        system.addParticle(12.0 * u.amu)
    bonds, angles, torsions = openmm.HarmonicBondForce(), openmm.HarmonicAngleForce(), openmm.PeriodicTorsionForce()
    for i in range(n - 1):
        bonds.addBond(i, i + 1, 0.15, 2.0e5)
    for i in range(n - 2):
        angles.addAngle(i, i + 1, i + 2, math.radians(110.0), 400.0)
    for d in range(n_dihedrals):
        for period, phase, k in TORSIONS[d]:
            torsions.addTorsion(d, d + 1, d + 2, d + 3, period, phase, k)
    for f in (bonds, angles, torsions):
        system.addForce(f)
    # a zig-zag start
    pos = np.array([[0.15 * i, 0.1 * (i % 2), 0.02 * i * i] for i in range(n)])
    return system, pos, [(d, d + 1, d + 2, d + 3) for d in range(n_dihedrals)]


def exact_share(states_of, n_dihedrals: int, n_states: int, grid: int = 721) -> np.ndarray:
    """State probabilities under exp(-sum U_d / kT) by quadrature on a grid."""
    axis = -math.pi + 2 * math.pi * (np.arange(grid) + 0.5) / grid
    mesh = np.meshgrid(*([axis] * n_dihedrals), indexing="ij")
    angles = np.stack([m.ravel() for m in mesh], axis=-1)
    u = sum(torsion_energy(angles[:, d], TORSIONS[d]) for d in range(n_dihedrals))
    w = np.exp(-(u - u.min()) / KT)
    lab = states_of(angles)
    p = np.array([w[lab == s].sum() for s in range(n_states)])
    return p / p.sum()


def run_toy(n_dihedrals: int, counts, ks, seed: int, frames: int = 1000, stride: int = 50):
    system, pos, dihedrals = chain_system(n_dihedrals)
    settings = UmbrellaSettings(frames_per_window=frames, stride_steps=stride, equilibration_steps=1000,
                                timestep_fs=1.0, friction_per_ps=5.0, minimize_steps=200)
    return sample_windows(system, pos, dihedrals, ks, grid_centres(counts), T, KT, settings, seed=seed,
                          observe=lambda p: np.stack([dihedral(p, d) for d in dihedrals], axis=-1))


def free_energy(p: np.ndarray) -> np.ndarray:
    return -np.log(p / p[0])


def test_dihedral_matches_mdtraj_and_grid_is_a_snake():
    import mdtraj as md

    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 4, 3))
    top = md.Topology()
    ch = top.add_chain()
    res = top.add_residue("X", ch)
    for i in range(4):
        top.add_atom(f"C{i}", md.element.carbon, res)
    ref = md.compute_dihedrals(md.Trajectory(x.astype(np.float32), top), [[0, 1, 2, 3]])[:, 0]
    assert np.allclose(dihedral(x, (0, 1, 2, 3)), ref, atol=1e-5)
    c = grid_centres([4, 3])
    assert c.shape == (12, 2) and len({tuple(r) for r in np.round(c, 6)}) == 12
    # consecutive windows are neighbours: one step along one axis
    steps = np.abs(np.diff(c, axis=0))
    assert np.all((steps < 1e-9).sum(axis=1) == 1)


def test_reduced_bias_wraps():
    u = reduced_bias(np.array([[math.pi - 0.1]]), np.array([[-math.pi + 0.1]]), [100.0], KT)
    assert u[0, 0] == pytest.approx(0.5 * 100.0 * 0.2 ** 2 / KT)


def test_one_dihedral_well_shares_match_quadrature():
    """1-D: the share of phi in [0, pi) from 16 restrained windows + MBAR, over four repeats."""
    def states(angles):
        return (np.asarray(angles)[:, 0] >= 0).astype(int)

    exact = exact_share(states, 1, 2)
    runs = [run_toy(1, [16], [80.0], seed) for seed in (1, 2, 3, 4)]
    est = MBARBasins(runs, states, 2)
    dF, se = est.free_energies()
    want = free_energy(exact)[1]
    assert abs(dF[1] - want) < 4 * se[1] + 0.03, (dF[1], se[1], want)
    assert se[1] < 0.1
    # the profile is the torsion potential in kT (up to a constant), where sampled
    centres, prof = est.profile(bins=36)
    u = torsion_energy(centres, TORSIONS[0]) / KT
    ok = np.isfinite(prof) & (u - u.min() < 8)
    assert np.abs((prof - u)[ok] - np.mean((prof - u)[ok])).max() < 0.35
    # a wrong force constant in the unbiasing gives a wrong answer: the test can fail
    wrong = [WindowSamples(**{**r.__dict__, "force_constants": r.force_constants * 0.5}) for r in runs]
    dF_wrong, _ = MBARBasins(wrong, states, 2).free_energies()
    assert abs(dF_wrong[1] - want) > 4 * se[1] + 0.03


def test_two_dihedral_grid_matches_quadrature():
    """2-D: the four quadrant shares of (phi_1, phi_2) from a 12 x 6 grid of windows."""
    def states(angles):
        a = np.asarray(angles)
        return (a[:, 0] >= 0).astype(int) + 2 * (a[:, 1] >= 0).astype(int)

    exact = exact_share(states, 2, 4, grid=361)
    run = run_toy(2, [12, 6], [80.0, 30.0], seed=3, frames=400)
    dF, se = MBARBasins([run], states, 4).free_energies()
    want = free_energy(exact)
    assert np.all(np.abs(dF - want) < 4 * se + 0.05), (dF, se, want)


def test_combine_cli_and_bad_inputs(tmp_path, monkeypatch):
    """Window files round-trip; --combine checks its inputs; errors exit 2 without output."""
    from pita.cli import main

    out = tmp_path / "w1.h5"
    rc = main(["umbrella", "--system", "alanine_dipeptide", "--temperature", "300", "--seed", "1",
               "--windows", "4", "--psi-windows", "2", "--frames-per-window", "10", "--stride-steps", "20",
               "--equilibration-steps", "100", "--minimize-steps", "50", "--out", str(out)])
    assert rc == 0 and out.is_file()
    from pita.umbrella import read_windows

    w, attrs = read_windows(out)
    assert w.theta.shape == (8, 10, 2) and w.observables.shape == (8, 10, 1, 2)
    # the restrained dihedrals are the molecule's phi and psi as pita.metrics measures them
    diff = (w.theta - w.observables[:, :, 0, :] + math.pi) % (2 * math.pi) - math.pi
    assert np.abs(diff).max() < 1e-4
    assert attrs["system"] == "alanine_dipeptide" and attrs["seed"] == 1 and w.n_energy_evals > 8 * 10 * 20
    js = tmp_path / "basins.json"
    assert main(["umbrella", "--combine", str(out), "--out", str(js)]) == 0
    res = json.loads(js.read_text())
    assert set(res["basins"]) == {"C7eq", "alpha_R", "alpha_L"} and res["repeats"] == 1
    assert abs(sum(b["p"] for b in res["basins"].values()) - 1) < 1e-9
    assert res["inputs"][0]["seed"] == 1 and res["n_energy_evals"] == w.n_energy_evals
    assert res["residue_label"] == "ALA2"
    # the backward sweep visits the same windows in reverse; repeats of both combine as one set of states
    back = tmp_path / "w2.h5"
    assert main(["umbrella", "--system", "alanine_dipeptide", "--temperature", "300", "--seed", "2",
                 "--windows", "4", "--psi-windows", "2", "--frames-per-window", "10", "--stride-steps", "20",
                 "--equilibration-steps", "100", "--minimize-steps", "50", "--sweep", "backward",
                 "--out", str(back)]) == 0
    wb, _ = read_windows(back)
    assert np.array_equal(wb.centres, w.centres[::-1])
    both = MBARBasins([w, wb], lambda o: basins_of(o), 3)
    assert both.centres.shape[0] == 8 and both.N_k.sum() == both.theta.shape[0]

    bad = tmp_path / "bad.json"
    for args in (["umbrella", "--combine", str(tmp_path / "missing.h5"), "--out", str(bad)],
                 ["umbrella", "--combine", str(js), "--out", str(bad)],
                 ["umbrella", "--combine", str(out), "--out", str(tmp_path / "bad.h5")],
                 ["umbrella", "--system", "alanine_dipeptide", "--out", str(tmp_path / "x.h5")],
                 ["umbrella", "--system", "lj13", "--temperature", "1", "--out", str(tmp_path / "x.h5")],
                 ["umbrella", "--system", "alanine_dipeptide", "--temperature", "300", "--windows", "1",
                  "--out", str(tmp_path / "x.h5")]):
        assert main(args) == 2, args
    assert not bad.exists() and not (tmp_path / "x.h5").exists() and not (tmp_path / "bad.h5").exists()


def basins_of(observables):
    from pita.metrics import basin_labels

    return basin_labels(np.asarray(observables)[:, 0])


def test_repeats_at_other_temperatures_are_refused(tmp_path):
    a = WindowSamples(centres=np.zeros((2, 1)), force_constants=np.array([10.0]), temperature=300.0, kT=KT,
                      theta=np.zeros((2, 5, 1)), observables=np.zeros((2, 5, 1)), energy=np.zeros((2, 5)))
    b = WindowSamples(**{**a.__dict__, "temperature": 310.0, "kT": KB * 310.0})
    with pytest.raises(PitaInputError, match="temperatures"):
        MBARBasins([a, b], lambda o: np.zeros(len(o), dtype=int), 1)


def test_unvisited_state_has_no_finite_free_energy():
    """A state no frame visits gets dF = inf (not the 1e10 of the restriction penalty)."""
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 0.1, size=(2, 50, 1))
    centres = np.array([[-0.1], [0.1]])
    w = WindowSamples(centres=centres, force_constants=np.array([100.0]), temperature=T, kT=KT,
                      theta=theta + centres[:, None, :], observables=theta + centres[:, None, :],
                      energy=np.zeros((2, 50)))
    dF, se = MBARBasins([w], lambda o: (np.asarray(o)[:, 0] >= 0).astype(int), 3).free_energies()
    assert np.isfinite(dF[1]) and dF[2] == np.inf and np.isnan(se[2])


def test_combine_refuses_mismatched_or_broken_window_files(tmp_path):
    import h5py

    from pita.cli import main

    common = ["--system", "alanine_dipeptide", "--temperature", "300", "--windows", "4", "--frames-per-window", "10",
              "--stride-steps", "10", "--equilibration-steps", "10", "--minimize-steps", "20"]
    one, two = tmp_path / "phi_only.h5", tmp_path / "grid.h5"
    assert main(["umbrella", *common, "--psi-windows", "1", "--out", str(one)]) == 0
    assert main(["umbrella", *common, "--psi-windows", "2", "--out", str(two)]) == 0
    broken = tmp_path / "broken.h5"
    broken.write_bytes(two.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["centres"]
    out = tmp_path / "b.json"
    for args in (["--combine", str(one), str(two)], ["--combine", str(broken)],
                 ["--combine", str(two), "--windows", "8"], ["--combine", str(two), "--temperature", "300"]):
        assert main(["umbrella", *args, "--out", str(out)]) == 2, args
    assert not out.exists()


def test_basin_comparison_has_no_z_without_a_finite_error():
    from pita.evaluate import compare_basin_reference

    ref = {"system": "alanine_dipeptide", "temperature": 300.0, "residue": 0,
           "basins": {"alpha_R": {"dF": 0.35, "se": 0.04}, "alpha_L": {"dF": 3.1, "se": 0.06}}}
    values = {"per_residue": {"ALA2": {"dF_alpha_R": 0.5, "dF_alpha_R_se": math.inf,
                                       "dF_alpha_L": None, "dF_alpha_L_se": None}}}
    out = compare_basin_reference(values, ref, "ref.json", 300.0, "alanine_dipeptide")
    assert out["residue"] == "ALA2"  # no residue_label: the index names it
    assert out["dF_alpha_R_diff"] == pytest.approx(0.15) and out["dF_alpha_R_z"] is None
    assert out["dF_alpha_L_diff"] is None and out["dF_alpha_L_z"] is None
    bad = {**ref, "basins": {"alpha_R": {"dF": math.nan, "se": 0.04}, "alpha_L": {"dF": 3.1, "se": 0.06}}}
    with pytest.raises(PitaInputError, match="basins.alpha_R"):
        compare_basin_reference(values, bad, "ref.json", 300.0, "alanine_dipeptide")
