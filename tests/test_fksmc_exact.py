"""FK-SMC exactness in 3-D on a non-Gaussian target, for every combination of the anneal's options.

The model is the EXACT diffusion model of a three-mode Gaussian mixture p in R^3 with full
(rotated, anisotropic) covariances: p_sigma is the mixture with covariances C_k + sigma^2 I, so
E(x, sigma) = -log p_sigma(x) and its score are analytic (pita.systems.gmm). The anneal's target
is exp(-gamma E(x, sigma_min)) at gamma = 1.5, which is not a mixture of Gaussians. Two
expectations are checked against a numerical integral on a 81^3 grid:

* mode masses: the weighted fraction of particles in each mode (nearest component by
  log-density at sigma = 0);
* log Z: the anneal's log_Z (running log-mean-exp of the weights across resamplings), an
  unbiased-in-Z estimate of log int exp(-gamma E(x, sigma_min)) dx, since the initial weight
  is taken against the normalised prior N(0, sigma_max^2/gamma).

Why 3-D with full covariances: in 1-D a Rademacher Hutchinson probe gives v^T J v = J exactly,
so a wrong divergence term could hide; here the Jacobian has off-diagonal entries and three
different curvatures, so the divergence and the time term move mass between modes and change Z.

Measured with these settings (N = 1000, 200 steps, sigma 5 -> 0.05, rho 7; mean over 3 seeds;
"sd" is the seed-to-seed spread of one run), all 52 combinations of ALL:
  * correct weights: max mode-mass error <= 0.050 (sd <= 0.054) and log Z error in
    [-0.21, +0.12] for exact / Rademacher divergences and discrete weights; with Gaussian probes
    mode masses <= 0.067 (sd <= 0.10) and log Z biased upwards by the probe noise (+0.05 ... +1.04:
    exp(A) of an unbiased but noisy rate; the bias shrinks with the step size).
  * continuous weights keep an O(step) time-discretisation bias; discrete weights have none
    (log Z, tempered drift, sigma 8 -> 0.01: -0.72, -0.35, -0.18, -0.09 at 50, 100, 200, 400 steps).
  * halved divergence term: mode masses off by 0.10 ... 0.21 and log Z by +3.2 ... +6 in every
    continuous combination (test_divergence_error_detected_everywhere, slow, also with no divergence).
  * time term scaled by 0.75: mode masses move by only ~0.03-0.05, log Z by -0.3 ... -0.4 with
    the tempered drift (exact / Rademacher: detected with margin) and by +0.3 ... +0.6 with PITA's
    drift at a large seed spread (sd 0.1 ... 0.4). With the tolerances below the check flags it in
    32 of the 40 continuous combinations; it misses the Gaussian-probe runs with the tempered
    drift (their log Z tolerance has to absorb the probe bias), PITA's drift with Hutchinson
    probes at threshold 0.5 (seed spread) and the tempered drift with the autograd time term
    (log Z -0.26 against 0.3). test_time_term_error_detected_with_more_particles (slow) shows
    PITA's drift caught with 3000 particles and 400 steps.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import pita.fksmc as fksmc
from pita.fksmc import anneal
from pita.systems.gmm import AnalyticDiffusionModel, GaussianMixture

GAMMA = 1.5
SCHED = dict(sigma_min=0.05, sigma_max=5.0, rho=7.0)
N_PARTICLES, N_STEPS = 1000, 200
MASS_TOL = 0.06  # exact / Rademacher divergence, discrete weights
MASS_TOL_GAUSSIAN_PROBES = 0.09
LOGZ_TOL = 0.3
LOGZ_TOL_GAUSSIAN_PROBES = 1.3  # Jensen bias of exp(A) with a noisy (unbiased) rate


def _cov(sds, a, b):
    ca, sa, cb, sb = math.cos(a), math.sin(a), math.cos(b), math.sin(b)
    r = np.array([[ca, -sa, 0], [sa, ca, 0], [0, 0, 1.0]]) @ np.array([[1, 0, 0], [0, cb, -sb], [0, sb, cb]])
    return r @ np.diag(np.square(sds)) @ r.T


GMM = GaussianMixture(means=[[-2.0, 0.0, 0.0], [2.0, 1.0, -0.5], [0.0, 2.5, 1.5]],
                      covs=[_cov([0.6, 0.3, 0.4], 0.5, 0.3), _cov([1.0, 0.7, 0.8], -0.4, 1.0),
                            _cov([0.25, 0.35, 0.2], 1.1, -0.6)],
                      weights=[0.45, 0.4, 0.15])
MODEL = AnalyticDiffusionModel(GMM)


def modes(x: torch.Tensor) -> torch.Tensor:
    comp, _ = GMM._component_log_probs(x.double(), 0.0)
    return comp.argmax(1)


@functools.lru_cache(maxsize=None)
def reference(gamma: float = GAMMA):
    """Mode masses and log Z of exp(-gamma E(x, sigma_min)) by a Riemann sum on a 81^3 grid
    over [-5.5, 5.5]^3 (agrees with 161^3 over [-7, 7]^3 to 1e-5)."""
    ax = torch.linspace(-5.5, 5.5, 81, dtype=torch.float64)
    h = float(ax[1] - ax[0])
    grid = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    mass, z = torch.zeros(3, dtype=torch.float64), 0.0
    for chunk in grid.split(200000):
        w = torch.exp(-gamma * GMM.diffused_energy(chunk, SCHED["sigma_min"]))
        mass += torch.bincount(modes(chunk), weights=w, minlength=3)
        z += float(w.sum())
    return (mass / z).numpy(), math.log(z * h**3)


def errors(seeds, n_particles=N_PARTICLES, n_steps=N_STEPS, **kw):
    """Mode-mass errors (3,) and log Z error, each the mean over seeds, and the per-run values."""
    ref_mass, ref_logz = reference()
    masses, logz = [], []
    for seed in seeds:
        r = anneal(MODEL, GAMMA, n_particles, n_steps, dtype=torch.float64, seed=seed, **SCHED, **kw)
        w = np.exp(r.log_weight - r.log_weight.max())
        masses.append(np.bincount(modes(r.x).numpy(), weights=w, minlength=3) / w.sum() - ref_mass)
        logz.append(r.log_Z - ref_logz)
    return np.mean(masses, 0), float(np.mean(logz)), np.asarray(masses), np.asarray(logz)


def problems(mass_err, logz_err, probe="rademacher", divergence_method="exact", **_):
    """What the exactness check finds wrong (empty: exact within the tolerances)."""
    gaussian = divergence_method == "hutchinson" and probe == "gaussian"
    mass_tol = MASS_TOL_GAUSSIAN_PROBES if gaussian else MASS_TOL
    logz_tol = LOGZ_TOL_GAUSSIAN_PROBES if gaussian else LOGZ_TOL
    out = []
    if np.abs(mass_err).max() > mass_tol:
        out.append(f"mode masses off by {np.round(mass_err, 3).tolist()} (tolerance {mass_tol})")
    if abs(logz_err) > logz_tol:
        out.append(f"log Z off by {logz_err:+.3f} (tolerance {logz_tol})")
    return out


def _combo(weights, drift, div, threshold):
    kw = dict(weights=weights, drift=drift, resample_threshold=threshold)
    if weights == "continuous" and div != "exact":
        kw.update(divergence_method="hutchinson", probe=div)
    return kw


# every factor level at least once (drift x divergence/probe x threshold x weights)
FAST = [
    _combo("continuous", "pita", "exact", 1.0),  # the paper's setting
    _combo("continuous", "pita", "rademacher", 0.5),
    _combo("continuous", "pita", "gaussian", 1.0),
    _combo("continuous", "tempered", "exact", 0.0),
    _combo("continuous", "tempered", "gaussian", 0.5),
    _combo("continuous", "score", "rademacher", 0.5),
    _combo("continuous", "energy", "exact", 0.0),
    _combo("discrete", "pita", None, 0.5),
    _combo("discrete", "tempered", None, 1.0),
    _combo("discrete", "score", None, 0.0),  # (discrete "energy" = "pita" for the exact model: slow suite)
    dict(weights="ais", resample_threshold=0.5),
    dict(weights="ais", resample_threshold=1.0, mala_steps=2),
    dict(weights="ais", resample_threshold=0.5, mala_steps=1, leapfrog_steps=4),  # HMC moves
    # gamma 1 along the sigma path, then resample-move tempering at sigma_min
    dict(weights="ais", resample_threshold=0.5, mala_steps=1, gamma_path="temper_at_sigma_min"),
    dict(weights="discrete", drift="pita", resample_threshold=0.5, gamma_path="temper_at_sigma_min",
         temper_mala_steps=0),
    dict(weights="discrete", drift="pita", resample_threshold=0.5, gamma_path="temper_at_sigma_min",
         temper_mala_steps=4, leapfrog_steps=3),  # HMC moves on the tempering levels only
]
ALL = ([_combo("continuous", d, v, t) for d in fksmc.DRIFTS for v in ("exact", "rademacher", "gaussian")
        for t in (0.0, 0.5, 1.0)]
       + [_combo("discrete", d, None, t) for d in fksmc.DRIFTS for t in (0.0, 0.5, 1.0)]
       + [dict(resample_threshold=0.5, time_derivative="autograd"),
          dict(resample_threshold=0.5, drift="tempered", time_derivative="autograd"),
          dict(resample_threshold=0.5, score_source="energy"),
          dict(resample_threshold=1.0, score_source="energy", divergence_method="hutchinson")]
       + [dict(weights="ais", resample_threshold=t, mala_steps=m) for t in (0.0, 0.5, 1.0) for m in (0, 1, 3)]
       + [dict(weights="ais", resample_threshold=t, mala_steps=m, leapfrog_steps=4) for t in (0.0, 1.0) for m in (1, 3)]
       + [dict(weights="ais", resample_threshold=0.5, gamma_path="temper_at_sigma_min", temper_mala_steps=4,
               leapfrog_steps=3)]
       + [dict(weights=w, resample_threshold=t, gamma_path="temper_at_sigma_min", temper_mala_steps=m)
          for w in fksmc.WEIGHTS for t in (0.0, 0.5) for m in (0, 8)])


def _particles(kw) -> int:
    """AIS without MALA moves is plain importance sampling of a scaled Gaussian (the scaling maps
    telescope), which rarely lands in the narrow third mode: mean mode-mass errors over 3 seeds
    0.20-0.24 at 1000 particles, 0.07-0.11 at 40,000 and <= 0.015 at 100,000 (log Z -0.01 ... -0.04),
    a variance that shrinks with N, not a bias; that setting gets 100,000 particles."""
    plain_is = kw.get("weights") == "ais" and kw.get("mala_steps", 1) == 0
    return 100_000 if plain_is else N_PARTICLES


def _id(kw):
    return "-".join(str(v) for v in kw.values())


@pytest.fixture
def scale_time_term(monkeypatch):
    """Inject an error: the rate's time term (both discretisations) times `factor`."""
    def apply(factor):
        fd, ag = fksmc.time_term, fksmc.time_term_autograd
        monkeypatch.setattr(fksmc, "time_term", lambda *a: factor * fd(*a))
        monkeypatch.setattr(fksmc, "time_term_autograd", lambda *a: factor * ag(*a))
    return apply


@pytest.fixture
def scale_divergence(monkeypatch):
    """Inject an error: every divergence (div s, laplacian E; exact or Hutchinson) times `factor`."""
    def apply(factor):
        div = fksmc.divergence
        monkeypatch.setattr(fksmc, "divergence", lambda *a, **k: factor * div(*a, **k))
    return apply


# ---------------------------------------------------------------------------------------------
def test_reference_is_not_trivial():
    """p^gamma moves mass between the modes (0.45/0.40/0.15 -> 0.59/0.18/0.23), so unweighted
    particles of p, or a model that ignores the weights, would fail the mass check."""
    mass, logz = reference()
    assert np.abs(mass - GMM.mix_weights.numpy()).max() > 0.2
    assert abs(mass.sum() - 1) < 1e-12 and math.isfinite(logz)


@pytest.mark.parametrize("kw", FAST, ids=_id)
def test_exactness(kw):
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert not problems(mass_err, logz_err, **kw), (kw, problems(mass_err, logz_err, **kw))


def test_halved_divergence_detected(scale_divergence):
    """Negative test: the check fails when the divergence term is halved (PITA's drift, the
    paper's resampling at every step)."""
    kw = _combo("continuous", "pita", "exact", 1.0)
    scale_divergence(0.5)
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    found = problems(mass_err, logz_err, **kw)
    assert len(found) == 2, (mass_err, logz_err)  # both the mode masses and log Z


def test_time_term_error_detected(scale_time_term):
    """Negative test: a time-derivative term scaled by 0.75 fails the check (tempered drift,
    where the weights' spread is small: log Z off by ~-0.45 against a tolerance of 0.3)."""
    kw = _combo("continuous", "tempered", "exact", 0.5)
    scale_time_term(0.75)
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert problems(mass_err, logz_err, **kw), (mass_err, logz_err)
    assert logz_err < -LOGZ_TOL - 0.1, logz_err


def test_ais_increment_error_detected(scale_time_term):
    """Negative test for weights="ais": its increment is the time term, so scaling it by 0.75 anneals to
    the wrong density: log Z is off by ~-2 (tolerance 0.3; the mode masses move by ~0.04)."""
    kw = dict(weights="ais", resample_threshold=0.5)
    scale_time_term(0.75)
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert problems(mass_err, logz_err, **kw) and logz_err < -1.0, (mass_err, logz_err)


def test_ais_scaling_transport_is_part_of_the_weight(monkeypatch):
    """Negative test: dropping the Jacobian term d ln a of the scaling map biases log Z."""
    kw = dict(weights="ais", resample_threshold=0.5)
    scaling = fksmc.gaussian_scaling
    monkeypatch.setattr(fksmc, "gaussian_scaling", lambda *a: (scaling(*a)[0], 0.0))
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert problems(mass_err, logz_err, **kw), (mass_err, logz_err)


# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("kw", ALL, ids=_id)
def test_exactness_all_combinations(kw):
    mass_err, logz_err, masses, logz = errors(seeds=(0, 1, 2), n_particles=_particles(kw), **kw)
    assert not problems(mass_err, logz_err, **kw), (kw, problems(mass_err, logz_err, **kw), masses, logz)


@pytest.mark.slow
@pytest.mark.parametrize("kw", [k for k in ALL if k.get("weights", "continuous") == "continuous"], ids=_id)
@pytest.mark.parametrize("factor", [0.5, 0.0])
def test_divergence_error_detected_everywhere(kw, factor, scale_divergence):
    # only the continuous rate has a divergence; discrete and AIS weights have none to get wrong
    scale_divergence(factor)
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert problems(mass_err, logz_err, **kw), (kw, mass_err, logz_err)


@pytest.mark.slow
@pytest.mark.parametrize("drift", ["pita", "tempered"])
def test_time_term_error_detected_with_more_particles(drift, scale_time_term):
    """With PITA's drift the 0.75 time term needs more particles and steps to stand out."""
    kw = _combo("continuous", drift, "exact", 0.5)
    ok = errors(seeds=(0, 1), n_particles=3000, n_steps=400, **kw)
    scale_time_term(0.75)
    bad = errors(seeds=(0, 1), n_particles=3000, n_steps=400, **kw)
    assert not problems(ok[0], ok[1], **kw), ok
    assert problems(bad[0], bad[1], **kw), bad


def test_tempering_at_sigma_min_is_exact_and_its_increment_checked(monkeypatch):
    """gamma_path="temper_at_sigma_min": gamma 1 down the sigma path, then resample-move tempering of
    exp(-g E(x, sigma_min)) from g = 1 to gamma. Its weights are exact: log Z within 0.02 over two seeds
    (AIS and discrete weights; seed spread ~0.005). Negative test: a tempering increment scaled by 0.75
    targets g = 1.375 instead of 1.5 and shifts log Z by +0.29 (mode masses by only ~0.05), so the
    check uses the tighter log Z tolerance these low-variance runs allow."""
    kw = dict(weights="ais", resample_threshold=0.5, mala_steps=1, gamma_path="temper_at_sigma_min")
    mass_err, logz_err, _, _ = errors(seeds=(0, 1), **kw)
    assert np.abs(mass_err).max() < MASS_TOL and abs(logz_err) < 0.1, (mass_err, logz_err)
    increment = fksmc.tempering_increment
    monkeypatch.setattr(fksmc, "tempering_increment", lambda *a: 0.75 * increment(*a))
    _, logz_bad, _, _ = errors(seeds=(0, 1), **kw)
    assert logz_bad > 0.2, logz_bad


def test_tempering_levels_follow_the_conditional_ess():
    """Each tempering level is chosen by bisection so that the conditional ESS/N of its increments is
    temper_ess: a stricter temper_ess takes more levels, and the last level reaches gamma exactly."""
    levels = {}
    for target in (0.3, 0.9):
        r = anneal(MODEL, GAMMA, 500, 50, dtype=torch.float64, seed=0, weights="ais", resample_threshold=0.5,
                   gamma_path="temper_at_sigma_min", temper_ess=target, temper_mala_steps=2, **SCHED)
        g = r.settings["temper_gammas"]
        assert g[-1] == GAMMA and all(b > a for a, b in zip(g, g[1:])) and g[0] > 1.0
        levels[target] = len(g)
    assert levels[0.9] > levels[0.3] >= 1
    # a hotter target (gamma < 1) tempers downwards and is as exact
    r = anneal(MODEL, 0.7, 1000, 100, dtype=torch.float64, seed=0, weights="ais", mala_steps=1, resample_threshold=0.5,
               gamma_path="temper_at_sigma_min", **SCHED)
    assert r.settings["temper_gammas"][-1] == 0.7 and all(g < 1.0 for g in r.settings["temper_gammas"])
    const = anneal(MODEL, 0.7, 1000, 100, dtype=torch.float64, seed=0, weights="ais", mala_steps=1,
                   resample_threshold=0.5, **SCHED)
    assert abs(r.log_Z - const.log_Z) < 0.1, (r.log_Z, const.log_Z)
    with pytest.raises(ValueError, match="gamma_path"):
        anneal(MODEL, GAMMA, 10, 5, seed=0, gamma_path="sideways", **SCHED)


def test_tempering_at_sigma_min_allocates_particles_to_the_narrow_mode():
    """Why the tempering path exists: at gamma 3 the narrow third mode holds 0.37 of exp(-gamma E(., sigma_min))
    (0.15 of p). The constant path decides the modes' shares where the smoothing has erased their widths,
    so its particles reach that mode at ~0.15-0.20 and the weights must make up the rest; with gamma 1 down
    the sigma path and tempering at sigma_min the share is ~0.24-0.28 (measured over seeds 0, 1 with 1000
    particles and 100 levels), and its path ESS is higher."""
    ref_mass = reference(3.0)[0]
    share, path_ess = {}, {}
    for path in ("constant", "temper_at_sigma_min"):
        s, e = [], []
        for seed in (0, 1):
            r = anneal(MODEL, 3.0, 1000, 100, dtype=torch.float64, seed=seed, weights="ais", mala_steps=1,
                       resample_threshold=0.5, gamma_path=path, **SCHED)
            s.append(float((modes(r.x) == 2).double().mean()))
            e.append(r.ess_path)
        share[path], path_ess[path] = float(np.mean(s)), float(np.mean(e))
    assert ref_mass[2] > 0.3
    assert ref_mass[2] - share["temper_at_sigma_min"] < ref_mass[2] - share["constant"] - 0.05, share
    assert path_ess["temper_at_sigma_min"] > path_ess["constant"], path_ess
