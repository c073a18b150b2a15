"""One implementation per concept: ESS, systematic resampling, block standard errors, chirality.

The shared implementations are checked against numbers known in closed form, and the old
names (pita.fksmc.ess, pita.metrics.kish_ess, SampleSet.ess, ...) against the shared ones.
"""
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pita import fksmc, metrics, weights
from pita.samples import SampleSet


# ------------------------------------------------------------------------------------ ESS
def test_ess_of_known_weights():
    # w = (1, 1, 2, 4)/8: (sum w)^2 / sum w^2 = 64 / 22
    lw = np.log([1.0, 1.0, 2.0, 4.0])
    assert weights.ess(lw) == pytest.approx(64.0 / 22.0, rel=1e-12)
    # shift invariance, torch input, float32 input, a GPU-like tensor path (CPU here)
    assert weights.ess(lw + 1234.5) == pytest.approx(64.0 / 22.0, rel=1e-12)
    assert weights.ess(torch.tensor(lw)) == pytest.approx(64.0 / 22.0, rel=1e-12)
    assert weights.ess(torch.tensor(lw, dtype=torch.float32)) == pytest.approx(64.0 / 22.0, rel=1e-6)
    # equal weights: N; one dominant weight: 1; None: n
    assert weights.ess(np.zeros(37)) == pytest.approx(37.0)
    assert weights.ess(np.array([0.0, -800.0, -800.0])) == pytest.approx(1.0)
    assert weights.ess(None, n=12) == 12.0
    with pytest.raises(ValueError):
        weights.ess(None)


def test_ess_non_finite_conventions():
    # -inf and NaN are zero weight; +inf entries share all weight; all zero -> 0
    assert weights.ess(np.array([0.0, 0.0, -np.inf])) == pytest.approx(2.0)
    assert weights.ess(np.array([0.0, 0.0, np.nan])) == pytest.approx(2.0)
    assert weights.ess(np.array([np.inf, np.inf, 0.0, 5.0])) == pytest.approx(2.0)
    assert weights.ess(np.full(4, -np.inf)) == 0.0
    w = weights.normalized_weights(np.full(4, -np.inf))
    np.testing.assert_allclose(w, 0.25)


def test_old_names_are_the_shared_ess():
    rng = np.random.default_rng(1)
    lw = rng.normal(scale=3.0, size=500)
    w = np.exp(lw - lw.max())
    expected = w.sum() ** 2 / (w ** 2).sum()
    assert fksmc.ess is weights.ess and metrics.kish_ess is weights.ess
    assert weights.ess(lw) == pytest.approx(expected, rel=1e-12)
    s = SampleSet(positions=np.zeros((500, 2, 3), np.float32), energy=np.zeros(500), log_weight=lw,
                  attrs={})
    assert s.ess() == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(s.weights(), w / w.sum(), rtol=1e-12)
    np.testing.assert_allclose(metrics.log_weights_to_weights(lw), w / w.sum(), rtol=1e-12)


# ------------------------------------------------------------------------ systematic resampling
@pytest.mark.parametrize("n_out", [7, 100, 1000])
def test_systematic_counts_within_floor_and_ceil(n_out):
    rng = np.random.default_rng(2)
    w = rng.dirichlet(np.ones(13))
    w[3] = 0.0
    w /= w.sum()
    with np.errstate(divide="ignore"):
        lw = np.log(w)
    for seed in range(20):
        idx = weights.systematic_resample(lw, n_out, np.random.default_rng(seed))
        counts = np.bincount(idx, minlength=w.size)
        assert idx.shape == (n_out,) and idx.dtype == np.int64
        assert np.all(counts >= np.floor(n_out * w) - 1e-9) and np.all(counts <= np.ceil(n_out * w) + 1e-9)
        assert counts[3] == 0  # zero weight: never drawn
        assert np.all(np.diff(idx) >= 0)  # systematic resampling returns sorted ancestors


def test_systematic_torch_numpy_and_aliases_agree():
    lw = torch.log(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64))
    a = fksmc.systematic_resample(lw, 1000, torch.Generator().manual_seed(0))
    b = weights.systematic_resample(lw, 1000, torch.Generator().manual_seed(0))
    assert isinstance(a, torch.Tensor) and torch.equal(a, b)
    assert torch.equal(torch.bincount(a, minlength=4), torch.tensor([100, 200, 300, 400]))
    # plain weights (pita export, metrics.subsample): the same counts
    c = weights.systematic_indices(np.array([1.0, 2.0, 3.0, 4.0]), 1000, np.random.default_rng(5))
    assert np.array_equal(np.bincount(c, minlength=4), [100, 200, 300, 400])
    # default n_out: as many as given
    assert weights.systematic_resample(np.zeros(9), generator=np.random.default_rng(0)).shape == (9,)
    with pytest.raises(ValueError):
        weights.systematic_indices(np.array([1.0, -1.0]), 4, np.random.default_rng(0))


def test_export_uses_the_shared_systematic_resampling():
    from pita.commands import export

    w = np.array([0.5, 0.25, 0.25])
    a = export.systematic_indices(w, 8, np.random.default_rng(3))
    b = weights.systematic_indices(w, 8, np.random.default_rng(3))
    assert np.array_equal(a, b) and np.array_equal(np.bincount(a, minlength=3), [4, 2, 2])


def test_metrics_subsample_keeps_weighted_distribution():
    rng = np.random.default_rng(4)
    x = np.arange(1000.0)[:, None]
    w = rng.dirichlet(np.ones(1000) * 0.3)
    xs, ws = metrics.subsample(x, w, 100, rng)
    assert xs.shape[0] <= 100 and ws.sum() == pytest.approx(1.0)
    # each point keeps floor or ceil of 100 w draws: its weight moves by less than 1/100
    full = np.zeros(1000)
    full[xs[:, 0].astype(int)] = ws
    assert np.all(np.abs(full - w) < 0.01 + 1e-12)


# --------------------------------------------------------------------------- block standard error
def _ar1(phi: float, n: int, rng: np.random.Generator) -> np.ndarray:
    from scipy.signal import lfilter

    eps = rng.normal(size=n + 2000)
    return lfilter([1.0], [1.0, -phi], eps)[2000:]  # burn-in: stationary start


def test_block_standard_error_of_ar1_matches_the_analytic_value():
    from pita import md

    phi, n = 0.9, 200_000
    x = _ar1(phi, n, np.random.default_rng(11))
    # Var(mean) -> sigma_eps^2 / ((1 - phi)^2 N) for AR(1) with unit innovations
    analytic = 1.0 / ((1.0 - phi) * math.sqrt(n))
    se = metrics.block_standard_error(x, metrics.trajectory_blocks(n, n_blocks=50))
    assert se == pytest.approx(analytic, rel=0.3)
    # the naive error is far off (so this test can tell)
    assert x.std() / math.sqrt(n) < 0.5 * analytic
    mean, se_md = md.block_standard_error(x, None, n_blocks=50)
    assert se_md == pytest.approx(se, rel=1e-12) and mean == pytest.approx(x.mean(), rel=1e-12)


def test_block_standard_error_equal_blocks_is_batch_means_and_respects_trajectories():
    from pita import md

    rng = np.random.default_rng(12)
    x = rng.normal(size=(4, 250)) + np.arange(4)[:, None]  # 4 runs with different means
    traj = np.repeat(np.arange(4), 250)
    _, se = md.block_standard_error(x.reshape(-1), traj, n_blocks=20)
    means = x.reshape(20, 50).mean(axis=1)  # 5 contiguous blocks of 50 per run
    assert se == pytest.approx(means.std(ddof=1) / math.sqrt(20), rel=1e-10)
    # a single block has no error estimate
    assert math.isnan(md.block_standard_error(np.ones(5), None, n_blocks=1)[1])


# ------------------------------------------------------------------------------------ chirality
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def ala3():
    mdtraj = pytest.importorskip("mdtraj")
    t = mdtraj.load(str(DATA / "alanine_tripeptide.pdb"))
    return t.topology, t.xyz[0].astype(np.float64)


def _invert_second_centre(x: np.ndarray, top) -> np.ndarray:
    """Swap HA and CB of the second alanine: that centre alone changes sign."""
    res = [r for r in top.residues if any(a.name == "CB" for a in r.atoms)][1]
    ha = next(a.index for a in res.atoms if a.name in ("HA", "HA2"))
    cb = next(a.index for a in res.atoms if a.name == "CB")
    y = x.copy()
    y[..., [ha, cb], :] = y[..., [cb, ha], :]
    return y


def test_chirality_metric_and_relax_guard_use_the_checker(ala3):
    from pita.chirality import ChiralityChecker
    from pita.relax import _chirality_guard

    top, ref = ala3
    checker = ChiralityChecker.from_topology(top, ref)
    assert checker.n_centers == 2
    good = np.repeat(ref[None], 4, axis=0)
    mixed = _invert_second_centre(good, top)
    x = np.concatenate([good, -good, mixed])  # 4 right, 4 all-mirrored, 4 mixed: 8 of 12 wrong
    out = metrics.wrong_chirality_fraction(x, top, ref)
    assert out == {"chirality_wrong_fraction": pytest.approx(8 / 12),
                   "chirality_wrong_fraction_weighted": pytest.approx(8 / 12), "n_chiral_centers": 2}
    w = np.array([3.0] * 4 + [1.0] * 8)
    assert metrics.wrong_chirality_fraction(x, top, ref, w)["chirality_wrong_fraction_weighted"] == \
        pytest.approx(8 / 20)
    assert checker.wrong_fraction(x, w) == pytest.approx(8 / 20) and checker.wrong_fraction(x) == pytest.approx(8 / 12)
    # the relax guard: a proposal keeps the enantiomer class of every centre, row by row (torch)
    system = SimpleNamespace(topology=top, reference_positions=ref)
    guard = _chirality_guard(system)
    xt = torch.tensor(np.concatenate([good, -good]), dtype=torch.float32)
    yt = torch.tensor(np.concatenate([good, mixed]), dtype=torch.float32)  # row 4..7: -good -> mixed flips one centre
    assert guard(xt, yt).tolist() == [True] * 4 + [False] * 4
    assert guard(xt, -xt).tolist() == [False] * 8
    assert _chirality_guard(SimpleNamespace(topology=None, reference_positions=None)) is None
    gly = SimpleNamespace(topology=top.subset([a.index for a in top.atoms if a.name != "CB"]),
                          reference_positions=ref[[a.index for a in top.atoms if a.name != "CB"]])
    assert _chirality_guard(gly) is None  # no chiral centre left
