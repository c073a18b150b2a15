"""MD seeding: the batched torch Langevin integrator, the OpenMM engine, and `pita md`.

Fast checks: equipartition on harmonic systems (exact answer), evaluation counting, seeds,
the CLI round trip, and a short alanine-dipeptide run where both engines must agree.
The slow test compares the engines at 300 K and 1200 K on decorrelated samples.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pita import md
from pita.cli import main
from pita.errors import PitaInputError
from pita.samples import SampleSet
from pita.systems import DATA_DIR, load
from pita.systems.base import KB_MOLECULAR, System


# ---- test systems ------------------------------------------------------------------------
class HarmonicRd(System):
    """U = k/2 |x|^2 in R^d (reduced units): <U> = d/2 kT exactly."""

    units = "reduced"
    kB = 1.0
    n_atoms = None
    mean_free = False
    name = "harmonic"

    def __init__(self, d: int = 3, k: float = 4.0):
        super().__init__()
        self._d, self.k = d, k

    @property
    def dim(self):
        return self._d

    def _energy(self, x):
        return 0.5 * self.k * (x * x).sum(-1)

    def _energy_and_forces(self, x):
        return 0.5 * self.k * (x * x).sum(-1), -self.k * x


class HarmonicParticles(System):
    """Particles of unequal masses tethered by springs of unequal stiffness to the origin,
    in molecular units: <U> = 3n/2 kT whatever the masses and stiffnesses."""

    units = "kJ/mol,nm"
    kB = KB_MOLECULAR
    mean_free = False
    name = "harmonic_particles"
    length_scale = 0.1

    def __init__(self, n: int = 4):
        super().__init__()
        self.n_atoms = n
        self.stiffness = torch.linspace(1e4, 1e5, n, dtype=torch.float64)  # kJ/mol/nm^2
        self._masses = np.linspace(1.0, 16.0, n)  # amu
        self.reference_positions = np.zeros((n, 3))

    @property
    def masses(self):
        return self._masses

    def _energy(self, x):
        k = self.stiffness.to(x).reshape(1, -1, 1)
        return 0.5 * (k * x * x).sum((-2, -1))

    def _energy_and_forces(self, x):
        k = self.stiffness.to(x).reshape(1, -1, 1)
        return 0.5 * (k * x * x).sum((-2, -1)), -k * x


def _aldp_pdb():
    p = DATA_DIR / "alanine_dipeptide.pdb"
    if p.exists():
        return p
    pytest.skip(f"no alanine dipeptide structure ({p})")


class _OpenMMOnly(System):
    """Stand-in with just what the OpenMM engine reads, for when MolecularSystem is absent."""

    units = "kJ/mol,nm"
    kB = KB_MOLECULAR
    length_scale = 0.164
    name = "alanine_dipeptide"
    backend = "openmm"

    def __init__(self, pdb_path):
        super().__init__()
        import openmm.app as app
        import openmm.unit as u

        pdb = app.PDBFile(str(pdb_path))
        ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
        self.openmm_system = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=None)
        self.reference_positions = np.asarray(pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        self.n_atoms = self.openmm_system.getNumParticles()


def aldp_openmm_system():
    """alanine dipeptide as loaded by the package, or a stand-in for the OpenMM engine."""
    try:
        return load("alanine_dipeptide")
    except ModuleNotFoundError:
        return _OpenMMOnly(_aldp_pdb())


def aldp_torch_system():
    try:
        system = load("alanine_dipeptide")
    except ModuleNotFoundError as exc:
        pytest.skip(f"torch evaluator for alanine dipeptide not importable yet ({exc})")
    if not md.has_torch_evaluator(system):
        pytest.skip("alanine_dipeptide loads without a torch backend")
    return system


# ---- torch integrator ---------------------------------------------------------------------
def test_equipartition_harmonic_rd():
    system = HarmonicRd(d=3, k=4.0)
    T = 2.0
    ss = md.run_md(system, T, 4000, engine="torch", replicas=200, stride_steps=40, equilibration_steps=200,
                   timestep=0.05, friction=2.0, seed=3, progress=False)
    mean, se = md.block_standard_error(ss.energy, ss.trajectory)
    assert abs(mean - 1.5 * T) < 4 * se + 0.01 * 1.5 * T, (mean, se)
    # the variance of U for a d-dim Gaussian is d/2 (kT)^2
    assert np.var(ss.energy) == pytest.approx(1.5 * T * T, rel=0.15)


def test_equipartition_particles_with_masses_molecular_units():
    system = HarmonicParticles(n=4)
    T = 300.0
    kT = system.kT(T)
    # stiffest spring 1e5 kJ/mol/nm^2 on 1 amu: omega = 316/ps, period 20 fs: dt = 1 fs is fine
    integ = md.BatchedLangevin(system, T, 0.001, 5.0, generator=torch.Generator().manual_seed(0))
    integ.initialize(torch.zeros(256, 4, 3, dtype=torch.float64))
    integ.step(300)
    us, kin = [], []
    for _ in range(30):
        integ.step(20)
        us.append(integ.energy.clone())
        kin.append(integ.kinetic_temperature())
    u = torch.stack(us)  # (frames, replicas)
    mean = float(u.mean())
    se = float(u.mean(0).std() / math.sqrt(u.shape[1]))
    assert abs(mean - 6.0 * kT) < 4 * se + 0.02 * 6.0 * kT, (mean / kT, se / kT)
    assert np.mean(kin) == pytest.approx(T, rel=0.03)


def test_torch_determinism_and_counting():
    system = HarmonicRd(d=2)
    kw = dict(engine="torch", replicas=5, stride_steps=7, equilibration_steps=11, timestep=0.05,
              minimize=False, progress=False)
    a = md.run_md(system, 1.0, 20, seed=42, **kw)
    b = md.run_md(system, 1.0, 20, seed=42, **kw)
    c = md.run_md(system, 1.0, 20, seed=43, **kw)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energy, b.energy)
    assert not np.array_equal(a.positions, c.positions)
    # 5 replicas x (1 initial force call + 11 equilibration + 4 frames x 7 steps)
    assert a.attrs["n_energy_evals"] == 5 * (1 + 11 + 4 * 7)
    assert a.attrs["n_energy_evals_total"] == a.attrs["n_energy_evals"]
    assert a.attrs["n_energy_evals_minimization"] == 0
    assert list(a.trajectory) == [r for r in range(5) for _ in range(4)]
    np.testing.assert_allclose(a.time_ps[:4], 0.05 * 7 * np.arange(1, 5))
    # forces stored are the forces at the stored positions
    np.testing.assert_allclose(a.forces, -system.k * a.positions, rtol=1e-5, atol=1e-6)


def test_counting_includes_minimisation_and_start_total(tmp_path):
    system = load("lj13")
    first = md.run_md(system, 1.0, 4, engine="torch", replicas=2, stride_steps=3, equilibration_steps=5,
                      minimize_steps=30, seed=1, progress=False)
    n_min = first.attrs["n_energy_evals_minimization"]
    assert 2 <= n_min <= 2 * (1 + 30)  # per start: one initial call + at most one per iteration
    assert first.attrs["n_energy_evals"] == n_min + 2 * (1 + 5 + 2 * 3)
    # starting from a set carries its cumulative total forward
    second = md.run_md(system, 1.0, 2, engine="torch", replicas=2, stride_steps=2, equilibration_steps=0,
                       minimize=False, start=first, seed=2, progress=False)
    assert second.attrs["n_energy_evals"] == 2 * (1 + 2)
    assert second.attrs["n_energy_evals_total"] == first.attrs["n_energy_evals_total"] + 6
    assert np.isfinite(second.energy).all()


def test_lj_lattice_start_is_compact_and_minimises():
    system = load("lj13")
    rng = np.random.default_rng(0)
    x = md._starting_positions(system, 3, None, rng)
    assert x.shape == (3, 13, 3)
    d = np.linalg.norm(x[:, :, None] - x[:, None], axis=-1) + np.eye(13)[None] * 9
    assert d.min() > 0.7 and np.abs(x).max() < 3.0
    xm, e, f, n = md.minimize_torch(system, torch.as_tensor(x), max_steps=200)
    assert n > 0 and bool((e < system.energy(torch.as_tensor(x))).all())
    assert float(e.max()) < -70.0  # near the LJ-13 minima (global: -88.6 in this convention)


def test_bad_arguments():
    system = HarmonicRd()
    with pytest.raises(PitaInputError, match="n_samples"):
        md.run_md(system, 1.0, -1, engine="torch")
    with pytest.raises(PitaInputError, match="temperature"):
        md.run_md(system, -5.0, 10, engine="torch")
    with pytest.raises(PitaInputError, match="stride_steps"):
        md.run_md(system, 1.0, 10, engine="torch", stride_steps=0)
    with pytest.raises(PitaInputError, match="engine"):
        md.run_md(system, 1.0, 10, engine="gromacs")
    with pytest.raises(PitaInputError, match="openmm"):
        md.run_md(system, 1.0, 10, engine="openmm")
    with pytest.raises(PitaInputError, match="timestep"):
        md.run_md(system, 1.0, 10, engine="torch", timestep=-0.1)


def test_blow_up_is_reported():
    system = HarmonicRd(k=1e6)
    with pytest.raises(PitaInputError, match="blew up"):
        md.run_md(system, 1.0, 4, engine="torch", replicas=2, stride_steps=200, equilibration_steps=0,
                  timestep=0.5, friction=0.0, minimize=False, progress=False)


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_writes_valid_set(tmp_path):
    out = tmp_path / "seed.h5"
    rc = main(["md", "--system", "lj13", "--temperature", "1.0", "--n-samples", "12", "--out", str(out),
               "--replicas", "4", "--stride-steps", "5", "--equilibration-steps", "20", "--minimize-steps", "40",
               "--seed", "7", "--rung", "0", "--timestep", "0.004", "--no-progress"])
    assert rc == 0
    ss = SampleSet.read(out, temperature=1.0, n_atoms=13, system="lj13")
    assert len(ss) == 12 and ss.positions.dtype == np.float32 and ss.forces.shape == (12, 13, 3)
    a = ss.attrs
    assert a["producing_step"] == "md" and a["seed"] == 7 and a["rung"] == 0 and a["units"] == "reduced"
    assert a["md_engine"] == "torch" and a["md_timestep"] == pytest.approx(0.004)
    assert a["n_energy_evals"] == a["n_energy_evals_minimization"] + 4 * (1 + 20 + 3 * 5)
    assert sorted(set(ss.trajectory.tolist())) == [0, 1, 2, 3]
    # --config-json supplies settings, the command line overrides them
    out2 = tmp_path / "seed2.h5"
    cfg = '{"n_samples": 3, "replicas": 5, "stride_steps": 2, "equilibration_steps": 2, "minimize": false, ' \
          '"friction_per_ps": 2.0}'
    assert main(["md", "--system", "lj13", "--temperature", "1.0", "--config-json", cfg, "--replicas", "3",
                 "--out", str(out2), "--seed", "5", "--no-progress"]) == 0
    b = SampleSet.read(out2).attrs
    assert b["seed"] == 5 and b["md_friction"] == 2.0 and b["n_energy_evals"] == 3 * (1 + 2 + 2)
    # the config schema always fills timestep_fs: a reduced-unit system ignores it, `timestep` wins
    out3 = tmp_path / "seed3.h5"
    cfg = '{"n_samples": 2, "replicas": 2, "stride_steps": 1, "equilibration_steps": 0, "minimize": false, ' \
          '"timestep_fs": 1.0, "engine": "auto", "platform": "Reference"}'
    assert main(["md", "--system", "lj13", "--temperature", "1", "--config-json", cfg, "--out", str(out3)]) == 0
    assert SampleSet.read(out3).attrs["md_timestep"] == md.default_settings(load("lj13"))["timestep"]
    assert main(["md", "--system", "lj13", "--temperature", "1", "--config-json", cfg[:-1] + ', "timestep": 0.002}',
                 "--out", str(out3)]) == 0
    assert SampleSet.read(out3).attrs["md_timestep"] == 0.002


@pytest.mark.parametrize("argv, needle", [
    (["--system", "nosuch", "--temperature", "1", "--n-samples", "3"], "unknown system"),
    (["--system", "lj13", "--temperature", "1", "--n-samples", "-3"], "--n-samples"),
    (["--system", "lj13", "--temperature", "1", "--n-samples", "3", "--replicas", "0"], "replicas"),
    (["--system", "lj13", "--temperature", "1", "--n-samples", "3", "--timestep-fs", "1"], "reduced units"),
    (["--system", "lj13", "--temperature", "1", "--n-samples", "3", "--engine", "openmm"], "OpenMM System"),
    (["--system", "lj13", "--n-samples", "3"], "--temperature"),
    (["--config-json", "{\"bogus\": 1}", "--system", "lj13", "--temperature", "1"], "unknown setting"),
    (["--config-json", "{not json", "--system", "lj13", "--temperature", "1"], "not valid JSON"),
    (["--config-json", "{\"system\": \"lj13\"}", "--system", "lj13", "--temperature", "1"], "unknown setting"),
    (["--system", "lj13", "--temperature", "1", "--n-sample", "3"], "unrecognized arguments: --n-sample"),
])
def test_cli_bad_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "x.h5"
    rc = main(["md", *argv, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


# ---- OpenMM engine and agreement on alanine dipeptide -----------------------------------------
def test_openmm_engine_counts_and_determinism():
    system = aldp_openmm_system()
    kw = dict(engine="openmm", replicas=2, stride_steps=20, equilibration_steps=30, seed=11, progress=False)
    a = md.run_md(system, 300.0, 6, **kw)
    b = md.run_md(system, 300.0, 6, **kw)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energy, b.energy)
    n_min = a.attrs["n_energy_evals_minimization"]
    assert n_min >= 2  # two trajectories, each minimised
    # 2 trajectories x (30 equilibration + 3 frames x (20 steps + 1 read-back)) + minimisation
    assert a.attrs["n_energy_evals"] == n_min + 2 * (30 + 3 * 21)
    assert a.attrs["md_platform"] == "Reference" and a.attrs["units"] == "kJ/mol,nm"
    assert list(a.trajectory) == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(a.time_ps[:3], [0.02, 0.04, 0.06])
    assert np.all(a.energy < 0) and np.all(np.abs(a.forces) < 1e5)


def test_auto_engine_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert md.choose_engine(load("lj13"), "auto", cpu) == "torch"
    assert md.choose_engine(HarmonicRd(), "auto", cuda) == "torch"
    aldp = aldp_openmm_system()
    # CPU: one OpenMM trajectory beats a few batched torch replicas, many replicas beat one
    # trajectory each (bench/bench_md.py)
    assert md.choose_engine(aldp, "auto", cpu) == "openmm"
    assert md.choose_engine(aldp, "auto", cpu, replicas=md.TORCH_CPU_MIN_REPLICAS - 1) == "openmm"
    torch_if_evaluator = "torch" if md.has_torch_evaluator(aldp) else "openmm"
    assert md.choose_engine(aldp, "auto", cpu, replicas=md.TORCH_CPU_MIN_REPLICAS) == torch_if_evaluator
    assert md.choose_engine(aldp, "auto", cuda) == torch_if_evaluator


def test_engines_agree_on_short_aldp_run():
    system = aldp_torch_system()
    T = 300.0
    common = dict(stride_steps=100, equilibration_steps=1000, friction=5.0, progress=False)
    a = md.run_md(system, T, 300, engine="openmm", replicas=1, seed=1, **common)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: one thread is faster on a busy 2-core machine
    try:
        b = md.run_md(system, T, 300, engine="torch", replicas=30, seed=1, **common)
    finally:
        torch.set_num_threads(threads)
    cmp = md.compare_energy_distributions(a, b)
    print(f"ALDP {T} K: openmm {cmp['a']['mean']:.2f} +- {cmp['a']['se']:.2f}, torch {cmp['b']['mean']:.2f} +- "
          f"{cmp['b']['se']:.2f} kJ/mol, z = {cmp['z']:.2f}, KS p = {cmp['ks_pvalue']:.3f}")
    assert abs(cmp["z"]) < 4.0
    assert cmp["ks_pvalue"] > 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("T", [300.0, 1200.0])
def test_engines_agree_aldp_slow(T):
    """Decorrelated samples at 300 K and 1200 K: energy distributions indistinguishable."""
    system = aldp_torch_system()
    common = dict(stride_steps=200, equilibration_steps=5000, friction=1.0, progress=False)
    a = md.run_md(system, T, 2000, engine="openmm", replicas=2, seed=5, **common)
    b = md.run_md(system, T, 2000, engine="torch", replicas=100, seed=5, **common)
    cmp = md.compare_energy_distributions(a, b)
    print(f"ALDP {T} K: openmm {cmp['a']['mean']:.2f} +- {cmp['a']['se']:.2f} (n_ind {cmp['a']['n_independent']}),"
          f" torch {cmp['b']['mean']:.2f} +- {cmp['b']['se']:.2f} (n_ind {cmp['b']['n_independent']}),"
          f" z = {cmp['z']:.2f}, KS p = {cmp['ks_pvalue']:.3f}")
    assert abs(cmp["z"]) < 4.0
    assert cmp["ks_pvalue"] > 1e-3
