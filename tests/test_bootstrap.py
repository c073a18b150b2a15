"""Bootstrap standard errors (pita.metrics.bootstrap_se, pita.evaluate.bootstrap_errors) against
analytic values: a wrong se (missing weights, wrong m-out-of-n scaling, no correlation
correction, a dropped side) fails these."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pita import metrics as M
from pita.evaluate import compute_metrics
from pita.samples import SampleSet


def _mean_se(x, n_boot=400, seed=0, w=None, draw=None):
    def stat(idx):
        ww = None if w is None else w[idx]
        return float(np.dot(M.normalize_weights(ww, idx.size), x[idx]))

    return M.bootstrap_se(stat, x.size, n_boot, np.random.default_rng(seed), draw=draw)


def test_mean_of_gaussian_data_matches_the_analytic_se_and_shrinks_like_one_over_sqrt_n():
    rng = np.random.default_rng(1)
    for n in (500, 2000, 8000):
        x = rng.normal(2.0, 3.0, size=n)
        assert _mean_se(x) == pytest.approx(3.0 / math.sqrt(n), rel=0.15), n
    small, large = (_mean_se(rng.normal(size=n)) for n in (500, 8000))
    assert small / large == pytest.approx(4.0, rel=0.2)


def test_weighted_mean_se_is_the_self_normalised_importance_sampling_se():
    rng = np.random.default_rng(2)
    n = 4000
    x = rng.normal(size=n)
    w = np.exp(1.2 * x)  # reweights N(0, 1) towards N(1.2, 1): a much smaller ESS than n
    wn = w / w.sum()
    mu = float(np.dot(wn, x))
    analytic = math.sqrt(float(np.sum(wn**2 * (x - mu) ** 2)))  # delta method
    assert analytic > 2.0 / math.sqrt(n)  # the weights matter: an unweighted se would be far off
    assert _mean_se(x, w=w) == pytest.approx(analytic, rel=0.2)


def test_m_out_of_n_draws_are_scaled_to_the_full_size():
    x = np.random.default_rng(3).normal(size=8000)
    assert _mean_se(x, draw=500) == pytest.approx(1.0 / math.sqrt(8000), rel=0.15)


def _set(energy, n_atoms=3, seed=0, **kw):
    rng = np.random.default_rng(seed)
    pos = rng.normal(size=(energy.size, n_atoms, 3)).astype(np.float32)
    attrs = {"system": "toy", "temperature": 1.0, "units": "reduced", "length_scale": 1.0,
             "n_energy_evals": 1, "n_energy_evals_total": 1}
    return SampleSet(pos, np.asarray(energy, dtype=np.float64), attrs, **kw)


def test_energy_w1_se_adds_both_sets_variances():
    """Shifted Gaussians: W1 = mean difference + O(noise), so se = sqrt(1/n_s + 1/n_r)."""
    rng = np.random.default_rng(4)
    n_s, n_r = 1000, 1000
    s, r = _set(rng.normal(4.0, 1.0, n_s), seed=1), _set(rng.normal(0.0, 1.0, n_r), seed=2)
    m, _ = compute_metrics(s, r, None, bootstrap=300, bootstrap_ot_samples=200, seed=0)
    assert m["energy_w1"] == pytest.approx(4.0, abs=0.15)
    assert m["energy_w1_se"] == pytest.approx(math.sqrt(1 / n_s + 1 / n_r), rel=0.15)
    assert m["energy_w1_se"] > 1.2 * math.sqrt(1 / n_s)  # the reference's share is not dropped
    assert m["bootstrap"]["replicates"] == 300 and m["distance_w2_se"] > 0
    again, _ = compute_metrics(s, r, None, bootstrap=300, bootstrap_ot_samples=200, seed=0)
    assert again["energy_w1_se"] == m["energy_w1_se"]  # deterministic for a seed
    plain, _ = compute_metrics(s, r, None, seed=0)
    assert plain["energy_w1"] == m["energy_w1"] and "energy_w1_se" not in plain


def test_time_correlated_set_is_scaled_by_its_statistical_inefficiency():
    """An AR(1) energy series (rho = 0.8) in 4 trajectories of 25,000 frames: se of the mean = sd/sqrt(n) *
    sqrt((1 + rho)/(1 - rho)) = 3 sd/sqrt(n); an iid bootstrap would give a third of it."""
    rng = np.random.default_rng(5)
    from scipy.signal import lfilter

    rho, n_traj, length = 0.8, 4, 25000
    noise = rng.normal(size=(n_traj, length)) * math.sqrt(1 - rho * rho)
    noise[:, 0] = rng.normal(size=n_traj)  # stationary start
    energy = lfilter([1.0], [1.0, -rho], noise, axis=1).reshape(-1)
    traj = np.repeat(np.arange(n_traj, dtype=np.int32), length)
    time_ps = np.tile(np.arange(length, dtype=np.float64), n_traj)
    s = _set(energy, seed=6, trajectory=traj, time_ps=time_ps)
    r = _set(rng.normal(size=2000), seed=7)
    m, _ = compute_metrics(s, r, None, bootstrap=200, bootstrap_ot_samples=100, n_blocks=100, seed=0)
    g_energy = m["bootstrap"]["g_samples"][0]
    assert g_energy == pytest.approx(9.0, rel=0.3)
    analytic = 3.0 / math.sqrt(energy.size)
    from_samples = math.sqrt(m["energy_mean_se"] ** 2)  # the reference does not move energy_mean
    assert from_samples == pytest.approx(analytic, rel=0.3)


def test_lineage_inefficiency_counts_independent_draws():
    """m independent basin draws (p = 0.3), each copied k times: the mean's variance is p(1-p)/m,
    k times what n = m k independent samples would give, so g = k; weights and an own lineage per
    sample leave g = 1; a single lineage is one draw, g = n."""
    rng = np.random.default_rng(8)
    m, k = 400, 10
    draws = (rng.random(m) < 0.3).astype(np.float64)
    values, lineage = np.repeat(draws, k), np.repeat(np.arange(m), k)
    assert M.lineage_inefficiency(values, lineage) == pytest.approx(k, rel=0.01)
    # moves that decorrelate the copies: each copy redrawn, lineages no longer matter
    fresh = (rng.random(m * k) < 0.3).astype(np.float64)
    assert M.lineage_inefficiency(fresh, lineage) == pytest.approx(1.0, abs=0.15)
    assert M.lineage_inefficiency(values, np.arange(m * k)) == pytest.approx(1.0, rel=1e-3)
    assert M.lineage_inefficiency(values, np.zeros(m * k, dtype=int)) == m * k
    # weighted: the ratio is to the importance-sampling variance of the same weighted mean
    w = rng.random(m)
    assert M.lineage_inefficiency(values, lineage, np.repeat(w, k)) == pytest.approx(k, rel=0.01)


def test_lineage_se_matches_the_spread_over_repeated_runs():
    """The se of a basin population from a set of 4000 copies of 50 draws (p = 0.2) must match the
    spread over independent repeats of that set (sqrt(p(1-p)/50) = 0.057), not the iid 0.0063."""
    rng = np.random.default_rng(9)
    m, k, p = 50, 80, 0.2
    draws = (rng.random(m) < p).astype(np.float64)
    s = _set(np.repeat(draws, k) + rng.normal(scale=1e-3, size=m * k), seed=10,
             extra={"ancestor": np.repeat(np.arange(m), k)})
    r = _set(rng.normal(size=2000), seed=11)
    mt, _ = compute_metrics(s, r, None, bootstrap=200, bootstrap_ot_samples=100, seed=0)
    truth = math.sqrt(p * (1 - p) / m)
    assert mt["bootstrap"]["g_samples"][0] == pytest.approx(k, rel=0.05)
    assert mt["energy_mean_se"] == pytest.approx(truth, rel=0.35)
    iid = _set(s.energy, seed=10)  # same values, no lineages recorded: the iid se
    mi, _ = compute_metrics(iid, r, None, bootstrap=200, bootstrap_ot_samples=100, seed=0)
    assert mi["energy_mean_se"] < truth / 5


def test_energy_w1_floor_is_the_w1_of_exact_sets_of_that_size():
    """The floor at n must be the mean W1 of independent exact n-sets against the reference (checked
    against fresh draws from the reference's own distribution), and fall like 1/sqrt(n)."""
    rng = np.random.default_rng(12)
    u_ref = rng.normal(size=20000)
    for n in (200, 2000):
        fresh = np.mean([M.wasserstein_1d(rng.normal(size=n), u_ref) for _ in range(200)])
        floor = M.energy_w1_floor(u_ref, None, n, np.random.default_rng(0), draws=200)
        assert floor == pytest.approx(fresh, rel=0.1)
    ratio = M.energy_w1_floor(u_ref, None, 200, rng) / M.energy_w1_floor(u_ref, None, 2000, rng)
    assert ratio == pytest.approx(math.sqrt(10), rel=0.25)


def test_energy_w1_floor_uses_the_sets_effective_size():
    """An exact set sits near its floor and a biased one far above it; 2000 copies of 200 draws
    (lineages) have the floor of 200 independent samples, not of 2000."""
    rng = np.random.default_rng(13)
    r = _set(rng.normal(size=20000), seed=14)
    exact, _ = compute_metrics(_set(rng.normal(size=300), seed=15), r, None, seed=0)
    assert exact["energy_n_effective"] == pytest.approx(300)
    assert exact["energy_w1"] < 2.5 * exact["energy_w1_floor"]
    biased, _ = compute_metrics(_set(rng.normal(0.5, 1.0, size=300), seed=15), r, None, seed=0)
    assert biased["energy_w1"] > 4 * biased["energy_w1_floor"]
    m, k = 200, 10
    copies = _set(np.repeat(rng.normal(size=m), k) + rng.normal(scale=1e-3, size=m * k), seed=16,
                  extra={"ancestor": np.repeat(np.arange(m), k)})
    c, _ = compute_metrics(copies, r, None, seed=0)
    assert c["ess"] == pytest.approx(m * k)
    assert c["energy_n_effective"] == pytest.approx(m, rel=0.2)
    floor_200 = M.energy_w1_floor(r.energy, None, m, np.random.default_rng(1), draws=200)
    assert c["energy_w1_floor"] == pytest.approx(floor_200, rel=0.15)


def test_energy_w1_floor_of_weighted_and_time_correlated_sets():
    """The effective size is the weighted set's Kish ESS (not its length), a trajectory set's length
    over its statistical inefficiency (AR(1), rho = 0.9: g = 19), and the reference's weights count:
    a uniform reference weighted to a standard normal has the standard normal's floor."""
    rng = np.random.default_rng(17)
    r = _set(rng.normal(size=20000), seed=18)
    floor_at = lambda n: M.energy_w1_floor(r.energy, None, n, np.random.default_rng(2), draws=200)  # noqa: E731
    # importance weights of N(0, 6^2) draws towards N(0, 1): Kish ESS/N = sqrt(2 - 1/36)/6 = 0.23
    x = rng.normal(scale=6.0, size=3000)
    w_set = _set(x, seed=19, log_weight=-0.5 * x**2 + 0.5 * (x / 6.0) ** 2)
    mw, _ = compute_metrics(w_set, r, None, seed=0)
    assert mw["ess"] < 0.3 * len(w_set)
    assert mw["energy_n_effective"] == pytest.approx(mw["ess"])
    assert mw["energy_w1_floor"] == pytest.approx(floor_at(mw["ess"]), rel=0.15)
    assert mw["energy_w1_floor"] > 1.5 * floor_at(len(w_set))
    draws = M.energy_w1_floor_draws(r.energy, None, mw["energy_n_effective"], np.random.default_rng([0, 104729]))
    assert mw["energy_w1_floor"] == pytest.approx(np.mean(draws)) and mw["energy_w1_floor"] < mw["energy_w1_floor_q90"]
    assert mw["energy_w1_floor_q90"] == pytest.approx(np.quantile(draws, 0.9))
    # about one exact set in ten of that size lies above the q90
    m_eff = round(mw["energy_n_effective"])
    fresh = [M.wasserstein_1d(rng.normal(size=m_eff), r.energy) for _ in range(300)]
    assert 0.03 < np.mean(np.array(fresh) > mw["energy_w1_floor_q90"]) < 0.2
    assert mw["energy_w1"] < mw["energy_w1_floor_q90"] * 1.5  # exact, so near its floor
    # AR(1) trajectories: 8 of 5000 frames, g = (1 + rho) / (1 - rho) = 19
    from scipy.signal import lfilter

    rho, n_traj, length = 0.9, 8, 5000
    noise = rng.normal(size=(n_traj, length)) * math.sqrt(1 - rho * rho)
    noise[:, 0] = rng.normal(size=n_traj)
    energy = lfilter([1.0], [1.0, -rho], noise, axis=1).reshape(-1)
    traj = _set(energy, seed=20, trajectory=np.repeat(np.arange(n_traj, dtype=np.int32), length),
                time_ps=np.tile(np.arange(length, dtype=np.float64), n_traj))
    mt, _ = compute_metrics(traj, r, None, n_blocks=40, seed=0)
    assert mt["energy_n_effective"] == pytest.approx(energy.size / 19.0, rel=0.35)
    assert mt["energy_w1_floor"] == pytest.approx(floor_at(energy.size / 19.0), rel=0.25)
    # a weighted reference: uniform on [-6, 6] weighted by the standard normal density
    xu = rng.uniform(-6.0, 6.0, size=40000)
    ru = _set(xu, seed=21, log_weight=-0.5 * xu**2)
    weighted_ref = M.energy_w1_floor(ru.energy, ru.weights(), 300, np.random.default_rng(3), draws=200)
    assert weighted_ref == pytest.approx(floor_at(300), rel=0.15)
    unweighted_ref = M.energy_w1_floor(ru.energy, None, 300, np.random.default_rng(3), draws=200)
    assert unweighted_ref > 1.5 * weighted_ref  # dropping the weights would be seen
    mr, _ = compute_metrics(_set(rng.normal(size=300), seed=22), ru, None, seed=0)
    assert mr["energy_w1_floor"] == pytest.approx(floor_at(300), rel=0.2)
