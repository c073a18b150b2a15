"""MolecularSystem and the torch force field against OpenMM's Reference platform.

Configurations are short Langevin MD runs at 300 K and 1200 K (OpenMM's own integrator)
plus Gaussian perturbations of them. The >= 1000-configuration check per force field is
bench/bench_energy.py --accuracy (and the slow test at the end).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pita
from pita.errors import PitaInputError
from pita.systems import DATA_DIR, load

ALDP_PDB = DATA_DIR / "alanine_dipeptide.pdb"
needs_aldp = pytest.mark.skipif(not ALDP_PDB.exists(), reason=f"{ALDP_PDB} not there yet (added separately)")
FORCE_FIELDS = ["alanine_dipeptide", "alanine_dipeptide_amber14"]


def md_frames(system, temperatures=(300.0, 1200.0), n_per_t=100, stride=10, seed=0):
    """Positions (B, n, 3) nm from OpenMM Langevin MD at each temperature, after a short burn-in."""
    import openmm as mm
    from openmm import unit

    frames = []
    for k, temp in enumerate(temperatures):
        integ = mm.LangevinMiddleIntegrator(temp * unit.kelvin, 1.0 / unit.picosecond, 0.001 * unit.picoseconds)
        integ.setRandomNumberSeed(seed + k + 1)
        ctx = mm.Context(system.openmm_system, integ, mm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(system.reference_positions)
        ctx.setVelocitiesToTemperature(temp * unit.kelvin, seed + k + 1)
        integ.step(200)
        for _ in range(n_per_t):
            integ.step(stride)
            frames.append(ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return np.array(frames)


def perturbed(x, scale, seed=0):
    return x + scale * np.random.default_rng(seed).standard_normal(x.shape)


def relative_errors(e, f, e_ref, f_ref):
    """max |dE|/|E| and max over configurations of |F - F_ref| / |F_ref| (norms over all atoms)."""
    e, f = np.asarray(e, dtype=np.float64), np.asarray(f, dtype=np.float64)
    de = np.abs(e - e_ref) / np.abs(e_ref)
    df = np.linalg.norm((f - f_ref).reshape(len(f), -1), axis=1) / np.linalg.norm(f_ref.reshape(len(f), -1), axis=1)
    return float(de.max()), float(df.max())


@pytest.fixture(scope="module", params=FORCE_FIELDS)
def reference(request):
    """(system, positions, OpenMM energies, OpenMM forces) for ~200 MD frames + 40 perturbed ones."""
    if not ALDP_PDB.exists():
        pytest.skip(f"{ALDP_PDB} not there yet (added separately)")
    system = load(request.param)
    x = md_frames(system)
    x = np.concatenate([x, perturbed(x[::10], 0.01), perturbed(x[5::10], 0.03, seed=1)])
    e_ref, f_ref = system.openmm_evaluator().evaluate(x)
    return system, x, e_ref, f_ref


def test_matches_openmm_float64(reference):
    system, x, e_ref, f_ref = reference
    e, f = system.energy_and_forces(torch.as_tensor(x))
    assert e.dtype == torch.float64 and f.shape == x.shape
    de, df = relative_errors(e, f, e_ref, f_ref)
    assert de <= 1e-6 and df <= 1e-6, (de, df)
    # energy-only path gives the same numbers
    np.testing.assert_allclose(system.energy(torch.as_tensor(x)).numpy(), e.numpy(), rtol=1e-12, atol=0)


def test_analytic_forces_match_autograd(reference):
    system, x, _, _ = reference
    xt = torch.as_tensor(x[:64])
    e, f = system.torch_forcefield.energy_and_forces(xt)
    ea, fa = system.torch_forcefield.energy_and_forces(xt, method="autograd")
    torch.testing.assert_close(e, ea, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(f, fa, rtol=1e-9, atol=1e-8)


def test_float32_close_to_openmm(reference):
    system, x, e_ref, f_ref = reference
    e, f = system.energy_and_forces(torch.as_tensor(x, dtype=torch.float32))
    assert e.dtype == torch.float32 and f.dtype == torch.float32
    assert torch.isfinite(e).all() and torch.isfinite(f).all()
    de, df = relative_errors(e, f, e_ref, f_ref)
    assert de <= 1e-4 and df <= 1e-4, (de, df)


def test_openmm_backend_matches(reference):
    system, x, e_ref, f_ref = reference
    other = load(system.spec(), backend="openmm")
    e, f = other.energy_and_forces(torch.as_tensor(x[:20]))
    np.testing.assert_allclose(e.numpy(), e_ref[:20], rtol=1e-12)
    np.testing.assert_allclose(f.numpy(), f_ref[:20], rtol=1e-12)
    e32 = other.energy(torch.as_tensor(x[:3], dtype=torch.float32))
    assert e32.dtype == torch.float32 and other.n_energy_evals == 23


@needs_aldp
def test_attributes_and_spec_round_trip():
    system = load("alanine_dipeptide")
    assert system.n_atoms == 22 and system.units == "kJ/mol,nm" and system.kB == pita.KB_KJ_PER_MOL_K
    assert system.length_scale == pytest.approx(0.164) and system.mean_free
    assert system.reference_positions.shape == (22, 3) and system.masses.shape == (22,)
    assert system.masses.sum() == pytest.approx(144.17, abs=0.1)  # C6H12N2O2
    assert system.topology.n_residues == 3 and system.openmm_system.getNumParticles() == 22
    again = load(system.spec())
    assert again.name == system.name and again.forcefield == system.forcefield
    x = torch.as_tensor(system.reference_positions[None])
    assert float(again.energy(x)) == pytest.approx(float(system.energy(x)), rel=1e-12)


@needs_aldp
def test_default_length_scale_is_rms_radius():
    system = load({"pdb": "alanine_dipeptide.pdb", "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"]})
    x = system.reference_positions
    assert system.length_scale == pytest.approx(np.sqrt(((x - x.mean(0)) ** 2).sum(1).mean()))
    assert system.name == "alanine_dipeptide"


@needs_aldp
def test_counts_energy_evaluations():
    system = load("alanine_dipeptide")
    x = torch.as_tensor(system.reference_positions).expand(5, -1, -1)
    system.energy(x)
    system.energy_and_forces(x[:3])
    assert system.n_energy_evals == 8
    assert system.reset_counter() == 8 and system.n_energy_evals == 0


@needs_aldp
def test_torsion_sign_convention_with_nonzero_phase():
    """Amber phases are 0 or pi, where the sign of phi does not matter; check it anyway."""
    import openmm as mm

    from pita.systems.molecule import OpenMMEvaluator
    from pita.systems.torch_forcefield import TorchForceField

    system = load("alanine_dipeptide")
    omm = system.openmm_system.__copy__()
    torsions = next(f for f in omm.getForces() if isinstance(f, mm.PeriodicTorsionForce))
    for t in range(torsions.getNumTorsions()):
        *atoms, n, phase, k = torsions.getTorsionParameters(t)
        torsions.setTorsionParameters(t, *atoms, n, 0.3 + 0.1 * t, k)
    x = perturbed(np.repeat(system.reference_positions[None], 8, 0), 0.02)
    e_ref, f_ref = OpenMMEvaluator(omm).evaluate(x)
    e, f = TorchForceField(omm).energy_and_forces(torch.as_tensor(x))
    de, df = relative_errors(e, f, e_ref, f_ref)
    assert de <= 1e-9 and df <= 1e-9


@needs_aldp
def test_tripeptide_matches_openmm():
    system = load("alanine_tripeptide")
    x = perturbed(np.repeat(system.reference_positions[None], 16, 0), 0.01)
    e_ref, f_ref = system.openmm_evaluator().evaluate(x)
    de, df = relative_errors(*system.energy_and_forces(torch.as_tensor(x)), e_ref, f_ref)
    assert de <= 1e-6 and df <= 1e-6


@needs_aldp
def test_unsupported_force_is_named():
    import openmm as mm

    from pita.systems.torch_forcefield import TorchForceField, UnsupportedForceError

    omm = load("alanine_dipeptide").openmm_system.__copy__()
    omm.addForce(mm.CustomExternalForce("x^2"))
    with pytest.raises(UnsupportedForceError, match="CustomExternalForce"):
        TorchForceField(omm)
    assert issubclass(UnsupportedForceError, PitaInputError)


@needs_aldp
def test_unrecognised_custom_gb_is_named():
    system = load("alanine_dipeptide", backend="openmm", forcefield=["amber14-all.xml", "implicit/gbn2.xml"])
    from pita.systems.torch_forcefield import TorchForceField, UnsupportedForceError

    with pytest.raises(UnsupportedForceError, match="CustomGBForce"):
        TorchForceField(system.openmm_system)


def test_missing_pdb(tmp_path):
    with pytest.raises(PitaInputError, match="nothere.pdb: PDB file not found"):
        load({"pdb": str(tmp_path / "nothere.pdb"), "forcefield": ["amber99sbildn.xml"]})


def test_malformed_pdb(tmp_path):
    bad = tmp_path / "bad.pdb"
    bad.write_text("ATOM      1  N   ALA A   1      xx.xxx  11.104   6.134  1.00  0.00           N\nEND\n")
    with pytest.raises(PitaInputError, match="bad.pdb") as info:
        load({"pdb": str(bad), "forcefield": ["amber99sbildn.xml"]})
    assert "\n" not in str(info.value)
    empty = tmp_path / "empty.pdb"
    empty.write_text("REMARK nothing here\nEND\n")
    with pytest.raises(PitaInputError, match="empty.pdb: no atoms"):
        load({"pdb": str(empty), "forcefield": ["amber99sbildn.xml"]})


@needs_aldp
def test_force_field_that_does_not_apply():
    with pytest.raises(PitaInputError, match="alanine_dipeptide.pdb: force field .* cannot be applied") as info:
        load({"pdb": "alanine_dipeptide.pdb", "forcefield": ["tip3p.xml"]})
    assert "\n" not in str(info.value)
    with pytest.raises(PitaInputError, match="nonexistent_ff.xml"):
        load({"pdb": "alanine_dipeptide.pdb", "forcefield": ["nonexistent_ff.xml"]})


@needs_aldp
def test_bad_spec_values():
    with pytest.raises(PitaInputError, match="system.backend"):
        load("alanine_dipeptide", backend="jax")
    with pytest.raises(PitaInputError, match="system.platform"):
        load("alanine_dipeptide", backend="openmm", platform="NoSuchPlatform")
    with pytest.raises(PitaInputError, match="system.colour"):
        load("alanine_dipeptide", colour="blue")


@pytest.mark.slow
@pytest.mark.parametrize("name", FORCE_FIELDS)
def test_matches_openmm_on_1000_configurations(name):
    if not ALDP_PDB.exists():
        pytest.skip(f"{ALDP_PDB} not there yet")
    system = load(name)
    x = md_frames(system, n_per_t=400)
    x = np.concatenate([x, perturbed(x[::4], 0.01), perturbed(x[1::4], 0.03, seed=1)])
    assert len(x) >= 1000
    e_ref, f_ref = system.openmm_evaluator().evaluate(x)
    de, df = relative_errors(*system.energy_and_forces(torch.as_tensor(x)), e_ref, f_ref)
    assert de <= 1e-6 and df <= 1e-6, (de, df)
