"""Baselines at the PITA budget: replica exchange and plain MD (pita.baselines, `pita baseline`).

Exact answers: a 1-D double well (two-component Gaussian mixture, modes at -3 and +3, weights
0.7/0.3, std 0.5) whose mode populations plain MD at T = 1 cannot get (no crossings) and replica
exchange must; equipartition per rung of the ladder with swaps (velocity rescaling); the swap
rule against a hand computation; the evaluation ledger against the budget, exactly.
"""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from pita import baselines as B
from pita.cli import main
from pita.errors import PitaInputError
from pita.samples import SampleSet
from pita.systems import load
from pita.systems.base import System

DOUBLE_WELL = {"name": "gmm", "means": [[-3.0], [3.0]], "stds": [0.5, 0.5], "weights": [0.7, 0.3]}
P_LEFT, STD = 0.7, 0.5


class Harmonic(System):
    """U = k/2 |x|^2 in R^d (reduced units): <U> = d/2 kT, kinetic T = T."""

    units = "reduced"
    kB = 1.0
    n_atoms = None
    mean_free = False
    name = "harmonic"

    def __init__(self, d: int = 10, k: float = 1.0):
        super().__init__()
        self._d, self.k = d, k

    @property
    def dim(self):
        return self._d

    def _energy(self, x):
        return 0.5 * self.k * (x * x).sum(-1)

    def _energy_and_forces(self, x):
        return 0.5 * self.k * (x * x).sum(-1), -self.k * x


def _per_walker(values: np.ndarray, walker: np.ndarray) -> np.ndarray:
    return np.array([values[walker == w].mean() for w in np.unique(walker)])


# ---- the swap rule ------------------------------------------------------------------------------
def test_swap_log_acceptance_by_hand():
    # (beta_i - beta_j)(U_i - U_j): a hot walker with the lower energy always moves down
    assert B.swap_log_acceptance(0.5, 1.0, 1.0, 3.0) == pytest.approx(1.0)
    assert B.swap_log_acceptance(0.5, 1.0, 5.0, 2.0) == pytest.approx(-1.5)
    assert B.swap_log_acceptance(1.0, 1.0, 5.0, 2.0) == 0.0


def test_swaps_exchange_configurations_and_rescale_velocities():
    system = Harmonic(d=3)
    ladder = B.TemperatureLadder.from_values([4.0, 2.0, 1.0], 1.0)
    re = B.ReplicaExchange(system, ladder, 2, 0.05, 1.0, generator=torch.Generator().manual_seed(0))
    x = torch.arange(18, dtype=torch.float64).reshape(6, 3) / 10  # slot k*M + m
    re.initialize(x)
    integ = re.integrator
    # hand-made energies U[k, m] and uniforms for the even pairs (k = 0: T 4 <-> T 2)
    integ.energy = torch.tensor([1.0, 5.0, 3.0, 2.0, 7.0, 7.0], dtype=torch.float64)
    v0, x0, f0 = integ.v.clone(), integ.x.clone(), integ.forces.clone()
    # m = 0: (1/4 - 1/2)(1 - 3) = +0.5 -> accept whatever u; m = 1: (-1/4)(5 - 2) = -0.75 -> a = 0.472
    ks, accept = re.accept_mask(0, torch.tensor([[0.99, 0.5]], dtype=torch.float64))
    assert ks.tolist() == [0] and accept.tolist() == [[True, False]]
    ks, accept = re.accept_mask(0, torch.tensor([[0.99, 0.45]], dtype=torch.float64))
    assert accept.tolist() == [[True, True]]
    n = re.attempt_swaps(0, torch.tensor([[0.99, 0.5]], dtype=torch.float64))
    assert n == 1
    # slots 0 (T=4, m=0) and 2 (T=2, m=0) exchanged; velocities scaled by sqrt(T_new / T_old)
    torch.testing.assert_close(integ.x[0], x0[2])
    torch.testing.assert_close(integ.x[2], x0[0])
    torch.testing.assert_close(integ.v[0], v0[2] * math.sqrt(4.0 / 2.0))
    torch.testing.assert_close(integ.v[2], v0[0] * math.sqrt(2.0 / 4.0))
    torch.testing.assert_close(integ.forces[2], f0[0])
    assert integ.energy.tolist() == [3.0, 5.0, 1.0, 2.0, 7.0, 7.0]
    for s in (1, 3, 4, 5):
        torch.testing.assert_close(integ.x[s], x0[s])
        torch.testing.assert_close(integ.v[s], v0[s])
    assert re.stats.attempts.tolist() == [2, 0] and re.stats.accepted.tolist() == [1, 0]
    # odd pairs: k = 1 (T 2 <-> T 1); m = 0: (1/2 - 1)(1 - 7) = 3 -> accept; m = 1: (-1/2)(2 - 7) -> accept
    assert re.attempt_swaps(1, torch.tensor([[0.5, 0.5]], dtype=torch.float64)) == 2
    assert integ.energy.tolist() == [3.0, 5.0, 7.0, 7.0, 1.0, 2.0]
    assert re.stats.attempts.tolist() == [2, 2] and re.stats.accepted.tolist() == [1, 2]
    np.testing.assert_allclose(re.stats.acceptance, [0.5, 1.0])


# ---- sampling the right distribution -------------------------------------------------------------
def _double_well_run(method: str, seed: int = 1, budget: int = 200_000):
    system = load(DOUBLE_WELL)
    kw = dict(walkers_per_temperature=32, timestep=0.05, friction=1.0, seed=seed, progress=False)
    if method == "replica_exchange":
        kw["swap_every"] = 10
    return system, B.run_baseline(method, system, [8.0, 4.0, 2.0, 1.0], 4000, B.EvaluationBudget(budget), **kw)


def test_replica_exchange_double_well_matches_the_analytic_target():
    system, ss = _double_well_run("replica_exchange")
    x = ss.positions[:, 0].astype(np.float64)
    walker = ss.trajectory
    left = (x < 0).astype(np.float64)
    # walkers are independent ladders: their means give honest error bars
    p_w = _per_walker(left, walker)
    p, se = p_w.mean(), p_w.std(ddof=1) / math.sqrt(p_w.size)
    print(f"RE double well: p_left = {p:.3f} +- {se:.3f} (exact {P_LEFT}), swap acceptance "
          f"{ss.attrs['swap_acceptance']}")
    assert abs(p - P_LEFT) < 4 * se + 0.02, (p, se)
    assert 0 < p_w.min() and p_w.max() < 1  # walkers cross the barrier
    # E[x] = 0.7 (-3) + 0.3 (3) = -1.2; E[x^2] = 9 + 0.25
    m_w = _per_walker(x, walker)
    assert abs(m_w.mean() + 1.2) < 4 * m_w.std(ddof=1) / math.sqrt(m_w.size) + 0.05
    # the width of each mode is the target temperature's (T = 2 would give 2 x 0.25)
    for sign in (-1, 1):
        xs = x[np.sign(x) == sign]
        assert np.var(xs) == pytest.approx(STD**2, rel=0.12), sign
    acc = np.asarray(ss.attrs["swap_acceptance"])
    assert acc.shape == (3,) and np.all((acc > 0.2) & (acc < 1))
    assert ss.attrs["method"] == "replica_exchange" and ss.attrs["temperature"] == 1.0


def test_plain_md_at_the_same_budget_misses_the_populations():
    """The check above can fail: plain MD at T = 1 never crosses the ~18 kT barrier, so each
    walker stays in the mode it started in."""
    _, ss = _double_well_run("md")
    x = ss.positions[:, 0].astype(np.float64)
    p_w = _per_walker((x < 0).astype(np.float64), ss.trajectory)
    assert set(np.unique(p_w)) <= {0.0, 1.0}
    assert ss.attrs["method"] == "md" and ss.attrs["walkers"] == 128


def test_equipartition_on_every_rung_with_swaps():
    """Kinetic temperature right after each round of swaps and <U> per rung: the velocities of a
    swapped configuration must be rescaled to its new temperature."""
    d = 10
    system = Harmonic(d=d)
    ladder = B.TemperatureLadder.from_values([4.0, 2.0, 1.0], 1.0)
    M = 32
    re = B.ReplicaExchange(system, ladder, M, 0.1, 0.5, generator=torch.Generator().manual_seed(3))
    re.initialize(torch.zeros(3 * M, d, dtype=torch.float64))
    re.step(400)
    kin, pot = [], []
    for r in range(300):
        re.step(5)
        re.attempt_swaps(r % 2)
        kin.append(re.integrator.kinetic_temperatures().reshape(3, M).mean(1))
        pot.append(re.integrator.energy.numpy().reshape(3, M).mean(1))
    kin, pot = np.mean(kin, 0), np.mean(pot, 0)
    T = np.asarray(ladder.temperatures)
    print("kinetic T per rung", kin, "<U>/(d/2 T)", pot / (0.5 * d * T), "acceptance", re.stats.acceptance)
    np.testing.assert_allclose(kin, T, rtol=0.03)
    np.testing.assert_allclose(pot, 0.5 * d * T, rtol=0.06)
    assert np.all(re.stats.acceptance > 0.1)


# ---- the budget ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["md", "replica_exchange"])
@pytest.mark.parametrize("budget", [2_000, 7_919, 50_000])
def test_evaluations_match_the_accounting_and_never_exceed_the_budget(method, budget):
    system = Harmonic(d=4)
    n0 = system.n_energy_evals
    ss = B.run_baseline(method, system, [3.0, 2.0, 1.0], 40, B.EvaluationBudget(budget, 0.25),
                        walkers_per_temperature=3, swap_every=7, timestep=0.05, seed=0, progress=False)
    a = ss.attrs
    spent = system.n_energy_evals - n0
    walkers = 9
    assert a["n_energy_evals"] == spent == a["n_energy_evals_total"] <= budget == a["n_energy_evals_budget"]
    assert budget - spent < walkers  # everything but less than one step of all walkers is spent
    assert a["n_energy_evals"] == a["n_energy_evals_equilibration"] + a["n_energy_evals_production"]
    frames = a["frames_per_walker"]
    per_walker = 1 + a["equilibration_steps"] + frames * a["stride_steps"]
    assert spent == a["n_energy_evals_minimization"] + walkers * per_walker
    assert a["n_energy_evals_production"] == walkers * frames * a["stride_steps"]
    assert a["n_energy_evals_minimization"] <= 0.1 * budget
    assert len(ss) == 40 and np.isfinite(ss.energy).all()
    # production takes (1 - equilibration_fraction) of what is left after minimisation, rounded down
    left = budget - a["n_energy_evals_minimization"]
    assert a["n_energy_evals_production"] <= 0.75 * left + 1e-9


def test_openmm_md_baseline_counts_read_backs_exactly():
    system = load("alanine_dipeptide")
    n0 = system.n_energy_evals
    ss = B.run_plain_md(system, [600.0, 300.0], 6, B.EvaluationBudget(3001), walkers_per_temperature=1,
                        engine="openmm", seed=2, progress=False)
    a = ss.attrs
    spent = system.n_energy_evals - n0
    assert a["md_engine"] == "openmm" and a["walkers"] == 2
    # per trajectory: equilibration + frames x (stride + 1 read-back of energy and forces)
    assert spent == a["n_energy_evals"] == a["n_energy_evals_minimization"] + 2 * (
        a["equilibration_steps"] + a["frames_per_walker"] * (a["stride_steps"] + 1))
    assert 3001 - 2 < spent <= 3001
    assert a["units"] == "kJ/mol,nm" and np.all(ss.energy < 0)


def test_budget_too_small_is_an_input_error():
    with pytest.raises(PitaInputError, match="too few"):
        B.run_replica_exchange(Harmonic(), [2.0, 1.0], 100, B.EvaluationBudget(50), walkers_per_temperature=4,
                               progress=False)
    with pytest.raises(PitaInputError, match="positive integer"):
        B.EvaluationBudget(0)
    with pytest.raises(PitaInputError, match="must decrease"):
        B.TemperatureLadder.from_values([1.0, 2.0], 1.0)


# ---- determinism, molecules ------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["md", "replica_exchange"])
def test_deterministic_given_a_seed(method):
    def once(seed):
        return B.run_baseline(method, load("lj13"), [2.0, 1.0], 12, B.EvaluationBudget(3000),
                              walkers_per_temperature=2, swap_every=5, seed=seed, progress=False)

    a, b, c = once(4), once(4), once(5)
    np.testing.assert_array_equal(a.positions, b.positions)
    np.testing.assert_array_equal(a.energy, b.energy)
    assert a.attrs.get("swap_accepted") == b.attrs.get("swap_accepted")
    assert not np.array_equal(a.positions, c.positions)
    # particles: stored with a zero centroid
    assert np.abs(a.positions.mean(axis=1)).max() < 1e-5


def test_replica_exchange_on_alanine_dipeptide():
    system = load("alanine_dipeptide")
    ss = B.run_replica_exchange(system, [1200.0, 755.95, 555.52, 300.0], 8, B.EvaluationBudget(3000),
                                walkers_per_temperature=2, swap_every=20, seed=0, progress=False)
    a = ss.attrs
    assert len(ss) == 8 and ss.positions.shape == (8, 22, 3) and a["temperature"] == 300.0
    assert a["n_energy_evals"] <= 3000 and len(a["swap_acceptance"]) == 3
    assert a["swap_pairs"] == ["1200-755.95", "755.95-555.52", "555.52-300"]
    # stored energies and forces are those of the stored (centred) positions
    e, f = system.energy_and_forces(torch.as_tensor(ss.positions, dtype=torch.float64))
    np.testing.assert_allclose(ss.energy, e.numpy(), rtol=1e-4, atol=0.05)
    np.testing.assert_allclose(ss.forces, f.numpy(), rtol=1e-3, atol=1.0)


# ---- the command line ------------------------------------------------------------------------------
def _pita_run_file(path, total: int, temperature: float = 1.0):
    """A stand-in for PITA's final rung: only its n_energy_evals_total matters."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 13, 3)).astype(np.float32)
    return SampleSet(x, np.zeros(4), {"system": "lj13", "temperature": temperature, "units": "reduced",
                                      "length_scale": 1.0, "n_energy_evals": 100, "n_energy_evals_total": total,
                                      "rung": 5}).write(path)


def test_cli_replica_exchange_then_evaluate(tmp_path, capsys):
    pita_final = _pita_run_file(tmp_path / "rung_5.h5", 6000)
    out = tmp_path / "baselines" / "replica_exchange" / "samples.h5"
    cfg = json.dumps({"enabled": True, "methods": ["md", "replica_exchange"], "replicas_per_temperature": 2,
                      "swap_every": 5, "n_samples": 20, "timestep_fs": 1.0, "friction_per_ps": 1.0,
                      "engine": "auto", "equilibration_fraction": 0.3})
    rc = main(["baseline", "--method", "replica_exchange", "--system", "lj13", "--temperatures", "2", "1.5", "1",
               "--budget-from", str(pita_final), "--config-json", cfg, "--replicas-per-temperature", "3", "--seed", "7",
               "--timestep", "0.004", "--out", str(out), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ss = SampleSet.read(out, temperature=1.0, n_atoms=13, system="lj13")
    a = ss.attrs
    assert len(ss) == 20 and ss.forces.shape == (20, 13, 3)
    assert a["method"] == "replica_exchange" and a["producing_step"] == "baseline" and a["seed"] == 7
    assert a["replicas_per_temperature"] == 3 and a["swap_every"] == 5 and a["timestep"] == 0.004
    assert a["equilibration_fraction"] == 0.3 and a["budget_from"] == str(pita_final)
    assert a["n_energy_evals_budget"] == 6000 and 6000 - 9 < a["n_energy_evals"] <= 6000
    assert a["n_energy_evals_total"] == a["n_energy_evals"] and len(a["config_digest"]) == 16
    assert len(a["swap_acceptance"]) == 2 and 0 <= a["swap_acceptance_mean"] <= 1
    # the reference at the target and the evaluation of the baseline
    ref = tmp_path / "ref.h5"
    assert main(["md", "--system", "lj13", "--temperature", "1", "--n-samples", "40", "--replicas", "4",
                 "--stride-steps", "10", "--equilibration-steps", "50", "--out", str(ref), "--no-progress"]) == 0
    ev = tmp_path / "baselines" / "replica_exchange"
    assert main(["evaluate", "--samples", str(out), "--reference", str(ref), "--method", "replica_exchange",
                 "--out", str(ev), "--no-plots"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["method"] == "replica_exchange" and m["n_energy_evals_total"] == a["n_energy_evals"]
    assert m["n_energy_evals_budget"] == 6000 and m["swap_acceptance_mean"] == a["swap_acceptance_mean"]
    assert m["swap_pairs"] == ["2-1.5", "1.5-1"] and len(m["swap_acceptance"]) == 2
    assert m["energy_w2"] is not None and m["distance_w2"] is not None
    # same call for plain MD: the method attribute tags the metrics without --method
    out_md = tmp_path / "baselines" / "md" / "samples.h5"
    assert main(["baseline", "--method", "md", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--budget",
                 "6000", "--n-samples", "20", "--replicas-per-temperature", "3", "--out", str(out_md), "--no-progress"]) == 0
    assert main(["evaluate", "--samples", str(out_md), "--reference", str(ref), "--out", str(tmp_path / "ev_md"),
                 "--no-plots"]) == 0
    assert json.loads((tmp_path / "ev_md" / "metrics.json").read_text())["method"] == "md"


@pytest.mark.parametrize("argv, needle", [
    (["--temperatures", "1", "2", "--budget", "5000"], "must decrease"),
    (["--temperatures", "1", "--budget", "5000"], "at least two temperatures"),
    (["--temperatures", "2", "1", "--budget", "-3"], "--budget"),
    (["--temperatures", "2", "1", "--budget", "30"], "too few"),
    (["--temperatures", "2", "1"], "one of the arguments --budget --budget-from is required"),
    (["--temperatures", "2", "1", "--budget", "5000", "--budget-from", "x.h5"], "not allowed with argument"),
    (["--temperatures", "2", "1", "--budget-from", "nope.h5"], "nope.h5: file not found"),
    (["--temperatures", "2", "1", "--budget", "5000", "--timestep-fs", "1"], "reduced units"),
    (["--temperatures", "2", "1", "--budget", "5000", "--engine", "openmm"], "batched torch"),
    (["--temperatures", "2", "1", "--budget", "5000", "--config-json", '{"swap_every": "often"}'],
     "swap_every': must be an integer"),
    (["--temperatures", "2", "1", "--budget", "5000", "--config-json", '{"walkers": 3}'], "unknown setting"),
])
def test_cli_bad_arguments(tmp_path, capsys, argv, needle):
    out = tmp_path / "x.h5"
    rc = main(["baseline", "--method", "replica_exchange", "--system", "lj13", "--n-samples", "8", *argv,
               "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_cli_budget_from_a_set_at_another_temperature(tmp_path, capsys):
    other = _pita_run_file(tmp_path / "hot.h5", 6000, temperature=2.0)
    out = tmp_path / "x.h5"
    rc = main(["baseline", "--method", "md", "--system", "lj13", "--temperatures", "2", "1", "--n-samples", "8",
               "--budget-from", str(other), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and str(other) in err and "'temperature' is 2 but 1 was expected" in err, err
    assert not out.exists()


# ---- the planned budget (pita budget) -----------------------------------------------------------------
def test_plan_counts_the_seed_set_final_corrections_and_relaxations():
    from pita.settings import AnnealSettings, RelaxSettings

    aldp, lj = load("alanine_dipeptide"), load("lj13")
    anneal = [AnnealSettings(n_particles=50), AnnealSettings(n_particles=70)]
    relax = [RelaxSettings(n_steps=10, torsion_moves=4), RelaxSettings(n_steps=20, torsion_moves=6, n_out=100)]
    plan = B.plan_pita_budget(aldp, 1000, anneal, relax)
    # rung 1: 50 final energies + 50 (1 + 10 + 4); rung 2: 70 + 100 (1 + 20 + 6)
    assert [(r["anneal"], r["relax"]) for r in plan["rungs"]] == [(50, 750), (70, 2700)]
    assert plan["n_energy_evals_total"] == 1000 + 50 + 750 + 70 + 2700 and plan["n_energy_evals_seed"] == 1000
    # no rotatable bond, no torsion moves made or counted
    assert B.plan_pita_budget(lj, 0, anneal, relax)["n_energy_evals_total"] == 50 + 50 * 11 + 70 + 100 * 21
    with pytest.raises(ValueError):
        B.plan_pita_budget(aldp, 0, anneal, relax[:1])


def test_cli_budget_plan_is_the_baselines_budget(tmp_path, capsys):
    seed = _pita_run_file(tmp_path / "rung_0.h5", 4000, temperature=2.0)
    plan = tmp_path / "budget.json"
    rc = main(["budget", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--seed-set", str(seed),
               "--anneal-json", '{"n_particles": 20}', "--relax-json", '{"1": {"n_steps": 5}, "2": {"n_steps": 9}}',
               "--out", str(plan)])
    assert rc == 0, capsys.readouterr().err
    got = json.loads(plan.read_text())
    assert got["kind"] == "pita_budget_plan" and got["system"] == "lj13" and got["temperature"] == 1.0
    assert got["n_energy_evals_total"] == 4000 + (20 + 20 * 6) + (20 + 20 * 10)
    assert len(got["config_digest"]) == 16 and got["producing_step"] == "budget"
    out = tmp_path / "md.h5"
    assert main(["baseline", "--method", "md", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--budget-from",
                 str(plan), "--n-samples", "8", "--replicas-per-temperature", "2", "--out", str(out),
                 "--no-progress"]) == 0
    a = SampleSet.read(out, temperature=1.0, n_atoms=13, system="lj13").attrs
    assert a["n_energy_evals_budget"] == got["n_energy_evals_total"] and a["budget_from"] == str(plan)
    assert a["n_energy_evals_total"] <= got["n_energy_evals_total"]
    # the plan counts its seed set's evaluations: smc from another seed set is refused
    other = _pita_run_file(tmp_path / "other_rung_0.h5", 3000, temperature=2.0)
    capsys.readouterr()
    rc = main(["baseline", "--method", "smc", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--budget-from",
               str(plan), "--seed-set", str(other), "--n-samples", "8", "--out", str(tmp_path / "smc.h5")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and not (tmp_path / "smc.h5").exists(), err
    assert f"{plan}: n_energy_evals_seed: the plan counts 4000" in err and "spent 3000" in err, err
    # and a plan for another ladder
    rc = main(["baseline", "--method", "md", "--system", "lj13", "--temperatures", "3", "1", "--budget-from",
               str(plan), "--n-samples", "8", "--out", str(tmp_path / "md3.h5")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "temperatures: the plan is for the ladder [2.0, 1.5, 1.0]" in err, err


# ---- the report ------------------------------------------------------------------------------------
def test_report_puts_pita_and_baselines_side_by_side(tmp_path):
    from pita.report import write_report

    common = {"system": "alanine_dipeptide", "units": "kJ/mol,nm", "plots": []}
    rows = {
        "rung_0": {"method": "pita", "rung": 0, "temperature": 1200.0, "energy_w2": 0.5, "n_energy_evals_total": 10},
        "rung_1": {"method": "pita", "rung": 1, "temperature": 300.0, "energy_w2": 1.25, "torus_w2": 0.3,
                   "n_energy_evals_total": 123456},
        "replica_exchange": {"method": "replica_exchange", "rung": 1, "temperature": 300.0, "energy_w2": 2.5,
                             "torus_w2": 0.7, "n_energy_evals_total": 123450, "n_energy_evals_budget": 123456,
                             "swap_acceptance_mean": 0.125, "swap_acceptance": [0.2, 0.05]},
        "md": {"method": "md", "rung": 1, "temperature": 300.0, "energy_w2": 3.5, "torus_w2": 0.9,
               "n_energy_evals_total": 123440, "n_energy_evals_budget": 123456},
    }
    paths = []
    for name, m in rows.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({**common, **m}))
        paths.append(tmp_path / name / "metrics.json")
    write_report(paths, tmp_path / "report.html", tmp_path / "summary.csv")
    html = (tmp_path / "report.html").read_text()
    start = html.index("PITA and baselines at the target temperature T = 300 K")
    table = html[start:html.index("</table>", start)]
    # PITA's final rung first, then md, then replica exchange; the hot rung is not in this table
    order = [table.index(f"<td>{m}</td>") for m in ("pita", "md", "replica_exchange")]
    assert order == sorted(order) and "<td>1200</td>" not in table
    for header in ("energy_w2", "torus_w2", "n_energy_evals_total", "n_energy_evals_budget", "swap_acceptance_mean"):
        assert f"<th>{header}</th>" in table
    for value in ("123,456", "123,450", "123,440", "0.125", "1.25", "2.5", "3.5"):
        assert f"<td>{value}</td>" in table, value
    import csv

    with open(tmp_path / "summary.csv") as fh:
        got = {r["method"] + r["rung"]: r for r in csv.DictReader(fh)}
    assert got["replica_exchange1"]["swap_acceptance_mean"] == "0.125"
    assert got["md1"]["n_energy_evals_budget"] == "123456" and got["pita1"]["n_energy_evals_total"] == "123456"
    assert "Not at equal cost" not in html
    # PITA spent more than its baselines were given (a relaxation bridged): the report says so
    rows["rung_1"]["n_energy_evals_total"] = 150000
    (tmp_path / "rung_1" / "metrics.json").write_text(json.dumps({**common, **rows["rung_1"]}))
    write_report(paths, tmp_path / "report.html", tmp_path / "summary.csv")
    assert "Not at equal cost:</b> PITA spent 150000 energy evaluations, more than the 123456" in \
        (tmp_path / "report.html").read_text()
    rows["rung_1"]["n_energy_evals_total"] = 123000
    (tmp_path / "rung_1" / "metrics.json").write_text(json.dumps({**common, **rows["rung_1"]}))
    write_report(paths, tmp_path / "report.html", tmp_path / "summary.csv")
    html = (tmp_path / "report.html").read_text()
    assert "Not at equal cost" not in html and "PITA spent 123000 energy evaluations, 456 fewer" in html


# ---- smc: adaptive tempering from the seed set, no model ----------------------------------------------
def _exact_1d(system, temperature: float, grid=np.linspace(-12.0, 12.0, 120_001)):
    """(grid, normalised density of exp(-U/T) on the grid, U on the grid) without counting."""
    u = system._energy(torch.as_tensor(grid[:, None])).numpy()
    p = np.exp(-(u - u.min()) / temperature)
    return grid, p / p.sum(), u


def _quantile_seed_set(system, temperature: float, n: int, total: int) -> SampleSet:
    """n points at the quantiles (i + 1/2)/n of exp(-U/T) (a seed set with no sampling noise),
    standing in for the rung-0 MD set that cost `total` evaluations."""
    grid, p, _ = _exact_1d(system, temperature)
    x = np.interp((np.arange(n) + 0.5) / n, np.cumsum(p), grid)
    u = system._energy(torch.as_tensor(x[:, None])).numpy()
    return SampleSet(x[:, None].astype(np.float32), u, {"system": system.name, "temperature": temperature,
                                                        "units": "reduced", "length_scale": 1.0,
                                                        "n_energy_evals": total, "n_energy_evals_total": total,
                                                        "rung": 0, "config_digest": "seedset"})


def test_smc_double_well_mode_masses_and_energy_are_exact():
    """T = 4 -> 2 -> 1 on the double well: the mode masses go 0.553 -> 0.604 -> 0.7 (w^(1/T)), which no
    move can do (barriers of 9 and 18 kT at T = 2 and 1): only the bridge's reweighting gets them right."""
    system = load(DOUBLE_WELL)
    grid, p1, u1 = _exact_1d(system, 1.0)
    p_left, mean_u = float(p1[grid < 0].sum()), float((p1 * u1).sum())
    assert p_left == pytest.approx(P_LEFT, abs=1e-6)
    seed_set = _quantile_seed_set(system, 4.0, 3000, total=12_345)
    budget = B.EvaluationBudget(150_000, source="pita run")
    lefts, energies, widths, lefts_bridged = [], [], [], []
    for seed in range(4):
        n0 = system.n_energy_evals
        pre = []
        ss = B.run_smc(system, [4.0, 2.0, 1.0], 1500, budget, seed_set, kernels=B.SmcKernel(n_steps=20), seed=seed,
                       min_particles=50, pre_relaxation=pre)
        a = ss.attrs
        spent = system.n_energy_evals - n0
        # the final rung's bridged set before its relaxation: everything but that relaxation spent
        (bridged,) = pre
        b = bridged.attrs
        assert b["method"] == "smc_bridged" and b["temperature"] == 1.0 and len(bridged) == a["smc_particles"][-1]
        assert b["n_energy_evals_total"] == 12_345 + a["smc_n_energy_evals_rung"][0] + b["n_energy_evals"]
        assert b["n_energy_evals"] == a["smc_particles"][1] * (1 + B.SmcKernel().bridge_mala_steps
                                                               * a["smc_bridge_levels"][1])
        assert a["n_energy_evals_total"] - b["n_energy_evals_total"] == 1500 * (1 + a["smc_relax_steps"][1])
        # its record stops at the final bridge: the parts add up, and no final-relaxation figures
        assert b["n_energy_evals_seed"] + b["n_energy_evals_bridge"] + b["n_energy_evals_relax"] \
            == b["n_energy_evals_total"]
        assert b["smc_relax_steps"] == a["smc_relax_steps"][:1] and "smc_extra_steps" not in b
        assert 0 < b["wall_time_s"] < a["wall_time_s"]
        assert bridged.lineage() is not None and bridged.lineage().max() < a["smc_particles"][1]
        lefts_bridged.append(np.mean(bridged.positions[:, 0] < 0))
        # the ledger: the seed set's evaluations count, then everything the baseline spends
        assert a["n_energy_evals"] == spent == sum(a["smc_n_energy_evals_rung"])
        assert a["n_energy_evals_total"] == 12_345 + spent <= 150_000 == a["n_energy_evals_budget"]
        assert 150_000 - a["n_energy_evals_total"] < 1500  # less than one step of the output set is left
        assert a["n_energy_evals"] == a["n_energy_evals_bridge"] + a["n_energy_evals_relax"]
        for k, (n, n_out, lev, steps) in enumerate(zip(a["smc_particles"], [a["smc_particles"][0], 1500],
                                                       a["smc_bridge_levels"], a["smc_relax_steps"])):
            kern = B.SmcKernel(n_steps=steps)
            assert a["smc_n_energy_evals_rung"][k] == B.smc_rung_cost(n, n_out, lev, kern, 0)
            assert a["smc_bridge_lambdas"][k][0] == 0.0 and a["smc_bridge_lambdas"][k][-1] == 1.0
            assert len(a["smc_bridge_lambdas"][k]) == lev + 1 and lev <= a["smc_bridge_max_levels"][k]
            assert min(a["smc_bridge_ess"][k][1:]) >= 0.5 - 1e-9 or a["smc_bridge_capped"][k]
        assert a["smc_particles"][0] <= a["smc_particles"][1]  # what rung 1 leaves goes to rung 2
        assert a["method"] == "smc" and a["temperature"] == 1.0 and a["producing_step"] == "baseline"
        assert len(ss) == 1500 and ss.forces is not None and ss.log_weight is None
        x = ss.positions[:, 0].astype(np.float64)
        lefts.append(np.mean(x < 0))
        energies.append(ss.energy.mean())
        widths.append(np.var(x[x < 0]))
    lefts, energies = np.array(lefts), np.array(energies)
    se_p, se_u = lefts.std(ddof=1) / 2, energies.std(ddof=1) / 2
    print(f"smc double well: p_left {lefts.mean():.4f} +- {se_p:.4f} (exact {p_left}), <U> {energies.mean():.4f} "
          f"+- {se_u:.4f} (exact {mean_u:.4f}), levels {a['smc_bridge_levels']}, particles {a['smc_particles']}")
    assert abs(lefts.mean() - p_left) < 4 * se_p + 0.01, (lefts, p_left)
    # no move crosses the barrier: the bridged set's mode mass is the relaxed set's, from the bridge alone
    assert abs(np.mean(lefts_bridged) - p_left) < 4 * np.std(lefts_bridged, ddof=1) / 2 + 0.01, (lefts_bridged, p_left)
    assert abs(energies.mean() - mean_u) < 4 * se_u + 0.02, (energies, mean_u)
    # the width of the left mode is the target temperature's (T = 2 would double it)
    assert np.mean(widths) == pytest.approx(STD**2, rel=0.1)


def test_smc_bridge_levels_are_capped_by_the_budget_and_accounted():
    """A harmonic system in 20 dimensions from T = 10 to 1 needs several bridge levels; capped at two
    (smc_max_levels), the last level is forced and flagged, and the ledger still holds."""
    system = Harmonic(d=20)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((400, 20)) * math.sqrt(10.0)
    seed_set = SampleSet(x.astype(np.float32), 0.5 * (x * x).sum(1),
                         {"system": "harmonic", "temperature": 10.0, "units": "reduced", "length_scale": 1.0,
                          "n_energy_evals": 400, "n_energy_evals_total": 400, "rung": 0})
    est = B.smc_level_estimates(seed_set.energy, 10.0, [10.0, 1.0], 0.5)
    assert 8 <= est[0] <= 10  # sqrt(d/2) ln 10 / sqrt(ln 2) = 8.7
    kern = B.SmcKernel(n_steps=4, bridge_mala_steps=4)
    for max_levels, spend in ((2, False), (50, True)):
        n0 = system.n_energy_evals
        ss = B.run_smc(system, [10.0, 1.0], 100, B.EvaluationBudget(60_000), seed_set, kernels=[kern],
                       max_levels=max_levels, spend_leftover=spend, min_particles=20, seed=1)
        a = ss.attrs
        spent = system.n_energy_evals - n0
        assert a["n_energy_evals_total"] == 400 + spent <= 60_000
        assert a["smc_n_energy_evals_rung"] == [B.smc_rung_cost(a["smc_particles"][0], 100, a["smc_bridge_levels"][0],
                                                                kern, 0, a["smc_extra_steps"])]
        if max_levels == 2:
            assert a["smc_bridge_levels"] == [2] and a["smc_bridge_capped"] == [1] and a["smc_extra_steps"] == 0
            assert a["n_energy_evals_total"] <= a["n_energy_evals_planned"]
        else:
            assert a["smc_bridge_levels"][0] >= 3 and a["smc_bridge_capped"] == [0]
            assert 60_000 - a["n_energy_evals_total"] < 100 and a["smc_extra_steps"] > 0
            # <U> = d/2 T at the target
            assert ss.energy.mean() == pytest.approx(10.0, rel=0.15)


def test_smc_plan_and_refusals():
    kern = [B.SmcKernel(n_steps=10, bridge_mala_steps=5)] * 2
    # per particle: rung 1 (1 + 5 x 3) + (1 + 10), rung 2 bridge (1 + 5 x 2); 50 outputs x (1 + 10)
    n, cost = B.plan_smc_particles(10_000, kern, [3, 2], [0, 0], 50)
    assert n == (10_000 - 550) // 38 and cost == n * 38 + 550 <= 10_000
    assert B.plan_smc_particles(500, kern, [3, 2], [0, 0], 50) == (0, 550)
    assert B.plan_smc_particles(10_000, kern, [3, 2], [0, 0], 50, max_particles=7)[0] == 7
    assert B.planned_levels([1, 4], 50) == [3, 7] and B.planned_levels([40], 20) == [20]
    system = load(DOUBLE_WELL)
    seed_set = _quantile_seed_set(system, 4.0, 200, total=1000)
    with pytest.raises(PitaInputError, match="too few for smc with 100 particles"):
        B.run_smc(system, [4.0, 1.0], 50, B.EvaluationBudget(5000), seed_set)
    with pytest.raises(PitaInputError, match="already spent 1000"):
        B.run_smc(system, [4.0, 1.0], 50, B.EvaluationBudget(1000), seed_set)
    with pytest.raises(PitaInputError, match="ladder starts at 8"):
        B.run_smc(system, [8.0, 1.0], 50, B.EvaluationBudget(10**6), seed_set)
    with pytest.raises(PitaInputError, match="one per rung 1..2"):
        B.run_smc(system, [4.0, 2.0, 1.0], 50, B.EvaluationBudget(10**6), seed_set, kernels=[B.SmcKernel()])
    with pytest.raises(PitaInputError, match="smc starts from"):
        B.run_baseline("smc", system, [4.0, 1.0], 50, B.EvaluationBudget(10**6))


def test_smc_deterministic_given_a_seed():
    system = load(DOUBLE_WELL)
    seed_set = _quantile_seed_set(system, 4.0, 300, total=100)

    def once(seed):
        return B.run_smc(system, [4.0, 2.0, 1.0], 60, B.EvaluationBudget(20_000), seed_set,
                         kernels=B.SmcKernel(n_steps=5, bridge_mala_steps=2), min_particles=20, seed=seed)

    a, b, c = once(3), once(3), once(4)
    np.testing.assert_array_equal(a.positions, b.positions)
    assert a.attrs["smc_bridge_lambdas"] == b.attrs["smc_bridge_lambdas"]
    assert a.attrs["n_energy_evals_planned"] == c.attrs["n_energy_evals_planned"]  # the plan needs no draw
    assert not np.array_equal(a.positions, c.positions)


def test_smc_relax_settings_from_json():
    from pita.settings import RelaxSettings
    from pita.steps import smc_kernel, smc_relax_settings

    assert smc_relax_settings(None, 2) == [RelaxSettings()] * 2
    one = smc_relax_settings({"n_steps": 7, "torsion_moves": 3}, 2)
    assert [r.n_steps for r in one] == [7, 7] and one[0].torsion_moves == 3
    per = smc_relax_settings({"1": {"n_steps": 5}, "2": {"n_steps": 9, "torsion_max_angle_deg": 90.0}}, 2)
    k = smc_kernel(per[1])
    assert [r.n_steps for r in per] == [5, 9] and k.n_steps == 9 and k.torsion_max_angle == pytest.approx(math.pi / 2)
    for data, needle in (({"1": {}}, "rung(s) 2 missing"), ({"1": {}, "2": {}, "3": {}}, "3 not on the ladder"),
                         ({"1": {}, "n_steps": 3}, "mixes rung indices"), ({"2": {"n_stepz": 1}, "1": {}}, "2.n_stepz"),
                         ([1], "expected a JSON object")):
        with pytest.raises(PitaInputError, match=re.escape(needle)):
            smc_relax_settings(data, 2)


def test_cli_smc_then_evaluate(tmp_path, capsys):
    seed = tmp_path / "rung_0.h5"
    assert main(["md", "--system", "lj13", "--temperature", "2", "--n-samples", "40", "--replicas", "4",
                 "--stride-steps", "10", "--equilibration-steps", "50", "--seed", "3", "--out", str(seed),
                 "--no-progress"]) == 0
    seed_total = SampleSet.read(seed).attrs["n_energy_evals_total"]
    pita_final = _pita_run_file(tmp_path / "rung_2.h5", seed_total + 9000)
    out = tmp_path / "baselines" / "smc" / "samples.h5"
    relax = json.dumps({"1": {"n_steps": 4, "bridge_mala_steps": 2, "n_out": 999},
                        "2": {"n_steps": 6, "bridge_mala_steps": 2}})
    rc = main(["baseline", "--method", "smc", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--budget-from",
               str(pita_final), "--seed-set", str(seed), "--relax-json", relax, "--config-json",
               json.dumps({"smc_min_particles": 8, "smc_relax": {"n_steps": 5}}), "--n-samples", "16", "--seed", "5",
               "--out", str(out), "--pre-relaxation-out", str(out.parent / "bridged.h5"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    ss = SampleSet.read(out, temperature=1.0, n_atoms=13, system="lj13")
    a = ss.attrs
    assert len(ss) == 16 and a["method"] == "smc" and a["seed"] == 5 and a["seed_set"] == str(seed)
    assert a["n_energy_evals_seed"] == seed_total and a["n_energy_evals_budget"] == seed_total + 9000
    assert a["n_energy_evals_total"] == seed_total + a["n_energy_evals"] and 9000 - 16 < a["n_energy_evals"] <= 9000
    # smc_relax overrides both rungs' n_steps; n_out does not apply (the plan sets the sizes)
    assert [r["n_steps"] for r in a["smc_relax_settings"]] == [5, 5]
    assert a["smc_relax_steps"][0] == 5 and a["smc_n_out"][0] == a["smc_particles"][0]
    assert len(a["smc_bridge_levels"]) == 2 and np.abs(ss.positions.mean(axis=1)).max() < 1e-5
    # each sample's lineage: which of the final rung's draws it descends from (for the errors)
    anc = ss.lineage()
    assert anc is not None and 1 <= np.unique(anc).size <= a["smc_particles"][-1] and anc.max() < a["smc_particles"][-1]
    printed = capsys.readouterr().out
    assert "smc samples" in printed and "bridged set before relaxation" in printed
    # the final rung's bridged set: its own provenance, what was spent up to it, its lineages
    pre = SampleSet.read(out.parent / "bridged.h5", temperature=1.0, n_atoms=13, system="lj13")
    b = pre.attrs
    assert b["method"] == "smc_bridged" and b["seed"] == 5 and b["config_digest"] == a["config_digest"]
    assert len(pre) == a["smc_particles"][-1] and b["n_energy_evals"] == a["n_energy_evals_bridge"] \
        - (a["smc_n_energy_evals_rung"][0] - a["smc_n_out"][0] * (1 + a["smc_relax_steps"][0]))
    assert b["n_energy_evals_total"] == a["n_energy_evals_total"] - 16 * (1 + a["smc_relax_steps"][-1])
    assert pre.lineage() is not None and np.abs(pre.positions.mean(axis=1)).max() < 1e-5
    ref = tmp_path / "ref.h5"
    assert main(["md", "--system", "lj13", "--temperature", "1", "--n-samples", "40", "--replicas", "4",
                 "--stride-steps", "10", "--equilibration-steps", "50", "--out", str(ref), "--no-progress"]) == 0
    ev = tmp_path / "ev"
    assert main(["evaluate", "--samples", str(out), "--reference", str(ref), "--out", str(ev), "--no-plots"]) == 0
    m = json.loads((ev / "metrics.json").read_text())
    assert m["method"] == "smc" and m["n_energy_evals_total"] == a["n_energy_evals_total"]
    assert m["n_energy_evals_budget"] == seed_total + 9000 and m["energy_w2"] is not None
    ev_pre = tmp_path / "ev_pre"
    assert main(["evaluate", "--samples", str(out.parent / "bridged.h5"), "--reference", str(ref), "--out",
                 str(ev_pre), "--no-plots"]) == 0
    m = json.loads((ev_pre / "metrics.json").read_text())
    assert m["method"] == "smc_bridged" and m["n_energy_evals_total"] == b["n_energy_evals_total"]


@pytest.mark.parametrize("argv, needle", [
    (["--budget", "5000"], "--seed-set: smc starts from"),
    (["--budget", "5000", "--seed-set", "nope.h5"], "nope.h5: file not found"),
    (["--budget", "1500", "--seed-set", "SEED"], "too few for smc"),
    (["--budget", "50000", "--seed-set", "SEED", "--relax-json", '{"1": {}}'], "rung(s) 2 missing"),
    (["--budget", "50000", "--seed-set", "SEED", "--relax-json", '{"n_stepz": 1}'], "n_stepz"),
    (["--budget", "50000", "--seed-set", "SEED", "--config-json", '{"smc_relax": {"n_stepz": 1}}'],
     "smc_relax.n_stepz"),
    (["--budget", "50000", "--seed-set", "SEED", "--config-json", '{"smc_ess_fraction": 1.5}'], "smc_ess_fraction"),
    (["--budget", "50000", "--seed-set", "SEED", "--pre-relaxation-out", "OUT"], "the same file as --out"),
])
def test_cli_smc_bad_arguments(tmp_path, capsys, argv, needle):
    seed = _pita_run_file(tmp_path / "seed.h5", 1000, temperature=2.0)
    out = tmp_path / "x.h5"
    argv = [str(seed) if a == "SEED" else str(out) if a == "OUT" else a for a in argv]
    rc = main(["baseline", "--method", "smc", "--system", "lj13", "--temperatures", "2", "1.5", "1", "--n-samples", "8",
               *argv, "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not out.exists()


@pytest.mark.parametrize("option", ["--seed-set", "--pre-relaxation-out"])
def test_cli_smc_options_only_for_smc(tmp_path, capsys, option):
    rc = main(["baseline", "--method", "md", "--system", "lj13", "--temperatures", "2", "1", "--budget", "5000",
               option, str(tmp_path / "y.h5"), "--out", str(tmp_path / "x.h5")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and f"{option}: only --method smc takes it" in err, err
