"""Metric functions on distributions with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from pita import metrics as M
from pita.systems import DATA_DIR

ALDP_PDB = DATA_DIR / "alanine_dipeptide.pdb"
ALA3_PDB = DATA_DIR / "alanine_tripeptide.pdb"


def quantiles(n: int, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """Deterministic 'sample' of N(loc, scale^2): its n mid-quantiles."""
    return norm.ppf((np.arange(n) + 0.5) / n, loc=loc, scale=scale)


# ------------------------------------------------------------------------------- 1-D OT
def test_w1_of_shifted_gaussians_is_the_shift():
    x, y = quantiles(5000), quantiles(5000, loc=1.5)
    assert M.wasserstein_1d(x, y, p=1) == pytest.approx(1.5, abs=1e-9)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=20000), rng.normal(3.0, 1.0, size=20000)
    assert M.wasserstein_1d(a, b, p=1) == pytest.approx(3.0, abs=0.05)


def test_w2_of_unit_vs_variance_four_gaussian_is_one():
    x, y = quantiles(20000), quantiles(20000, scale=2.0)
    assert M.wasserstein_1d(x, y, p=2) == pytest.approx(1.0, abs=1e-3)
    e = M.energy_wasserstein(x, y)
    assert e["energy_w2"] == pytest.approx(1.0, abs=1e-3)
    assert e["energy_w1"] == pytest.approx(math.sqrt(2 / math.pi), abs=1e-3)  # E|Z| for the monotone coupling


def test_weighted_agrees_with_resampled():
    rng = np.random.default_rng(1)
    x = rng.normal(size=40000)
    w = np.exp(x - x.max())  # tilts N(0,1) into N(1,1)
    target = quantiles(20000, loc=1.0)
    # weighted set ~ target
    assert M.wasserstein_1d(x, target, w, p=2) < 0.05
    # weighted vs its resampled version: the same distribution
    xs, ws = M.subsample(x, w, 2000, rng)
    resampled = np.repeat(xs, np.round(ws * 2000).astype(int))
    assert resampled.size == 2000
    d_weighted = M.wasserstein_1d(x, target, w, p=1)
    d_resampled = M.wasserstein_1d(resampled, target, p=1)
    assert abs(d_weighted - d_resampled) < 0.05
    # multinomial resampling agrees too
    idx = rng.choice(x.size, size=20000, p=w / w.sum())
    assert M.wasserstein_1d(x[idx], x, None, w, p=2) < 0.05


def test_subsample_keeps_small_sets_and_weights():
    rng = np.random.default_rng(2)
    x = np.arange(10.0)[:, None]
    xs, ws = M.subsample(x, None, 100, rng)
    assert xs.shape == (10, 1) and np.allclose(ws, 0.1)
    xs, ws = M.subsample(np.arange(1000.0)[:, None], None, 100, rng)
    assert xs.shape == (100, 1) and np.unique(xs).size == 100
    w = np.zeros(1000)
    w[[3, 7]] = [1.0, 3.0]
    xs, ws = M.subsample(np.arange(1000.0)[:, None], w, 100, rng)
    assert set(xs[:, 0]) == {3.0, 7.0}
    assert ws[xs[:, 0] == 7.0][0] == pytest.approx(0.75, abs=0.011)


def test_kish_ess():
    assert M.kish_ess(None, 50) == 50
    assert M.kish_ess(np.zeros(50)) == pytest.approx(50)
    assert M.kish_ess(np.array([0.0, -1000.0, -1000.0])) == pytest.approx(1.0)
    lw = np.random.default_rng(3).normal(size=100) * 2 + 500.0  # large offsets are harmless
    w = np.exp(lw - lw.max())
    assert M.kish_ess(lw) == pytest.approx(w.sum() ** 2 / (w ** 2).sum())
    assert M.kish_ess(np.array([0.0, 0.0, -np.inf])) == pytest.approx(2.0)


def test_distance_w2_invariances_and_scaling():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 13, 3))
    assert M.distance_w2(x, x) == pytest.approx(0.0, abs=1e-12)
    assert M.distance_w2(x + 5.0, x) == pytest.approx(0.0, abs=1e-9)  # translation
    d = M.pairwise_distances(x)
    assert d.shape == (300, 78)
    # scaling by 1.1 moves every distance monotonically: W2 = 0.1 * rms distance
    assert M.distance_w2(1.1 * x, x) == pytest.approx(0.1 * np.sqrt(np.mean(d ** 2)), rel=1e-6)


# --------------------------------------------------------------------------- angles
def test_torus_w2_across_the_seam_is_small():
    rng = np.random.default_rng(5)
    n = 400
    a = np.full((n, 2), math.pi - 0.05) + rng.normal(scale=1e-3, size=(n, 2))
    b = np.full((n, 2), -math.pi + 0.05) + rng.normal(scale=1e-3, size=(n, 2))
    d = M.torus_w2(a, b)
    assert d == pytest.approx(math.sqrt(2) * 0.1, abs=0.01)
    # the Euclidean W2 would see almost 2 pi per angle
    assert M.euclidean_w2(a, b) > 8.0
    assert M.torus_w2(a, a) == pytest.approx(0.0, abs=1e-12)
    # a plain shift inside the torus
    c = rng.uniform(-1, 1, size=(n, 2))
    assert M.torus_w2(c + 0.2, c) == pytest.approx(0.2 * math.sqrt(2), abs=1e-6)


def test_torus_w2_subsampled_weighted():
    rng = np.random.default_rng(6)
    a = rng.uniform(-math.pi, math.pi, size=(5000, 2))
    w = np.where(a[:, 0] > 0, 1.0, 0.0)  # only the right half counts
    right = a[a[:, 0] > 0]
    assert M.torus_w2(a, right, w, max_n=800, rng=rng) < 0.25
    assert M.torus_w2(a, right, None, max_n=800, rng=rng) > 0.8


def test_ramachandran_kl():
    rng = np.random.default_rng(7)
    ang = M.wrap_angle(rng.normal([-1.4, 2.6], 0.3, size=(5000, 2)))
    assert M.ramachandran_kl(ang, ang) == pytest.approx(0.0, abs=1e-12)
    other = M.wrap_angle(rng.normal([-1.4, 2.6], 0.3, size=(5000, 2)))
    shifted = M.wrap_angle(rng.normal([-1.2, -0.7], 0.3, size=(5000, 2)))
    kl_same, kl_far = M.ramachandran_kl(other, ang), M.ramachandran_kl(shifted, ang)
    assert kl_same < 0.5
    assert kl_far > 5.0
    # weights: a mixture with the wrong half weighted out equals the right half
    mix = np.concatenate([other, shifted])
    w = np.concatenate([np.ones(5000), np.zeros(5000)])
    assert M.ramachandran_kl(mix, ang, w) == pytest.approx(kl_same, abs=1e-9)
    h = M.ramachandran_histogram(ang)
    assert h.shape == (M.RAMA_BINS, M.RAMA_BINS) and h.sum() == pytest.approx(1.0)


def test_basin_labels():
    deg = np.array([[-80, 150], [-70, -40], [60, 40], [-150, -170], [170, 170], [60, -120], [-80, 60],
                    [-80, 45], [-80, -125], [130, -40]], dtype=float)
    lab = M.basin_labels(np.radians(deg))
    names = [M.BASIN_NAMES[k] for k in lab]
    assert names == ["C7eq", "alpha_R", "alpha_L", "C7eq", "C7eq", "alpha_L", "C7eq", "alpha_R", "C7eq",
                     "alpha_R"]
    f = M.basin_free_energies(np.array([0, 0, 0, 1, 2, 2]))
    assert f["p_C7eq"] == pytest.approx(0.5)
    assert f["dF_alpha_R"] == pytest.approx(-math.log(1 / 3))
    assert f["dF_alpha_L"] == pytest.approx(-math.log(2 / 3))
    assert math.isinf(M.basin_free_energies(np.array([0, 0, 1]))["dF_alpha_L"])


# ---------------------------------------------------------------------- block averaging
def test_block_error_on_iid_data_matches_naive_standard_error():
    rng = np.random.default_rng(8)
    n = 20000
    x = rng.normal(size=n)
    blocks = M.trajectory_blocks(n, None, None, n_blocks=100)
    se = M.block_standard_error(x, blocks)
    assert se == pytest.approx(x.std() / math.sqrt(n), rel=0.25)
    # correlated data (AR(1), tau ~ 50 steps): the block error is much larger than the naive one
    y = np.empty(n)
    y[0] = 0.0
    eps = rng.normal(size=n)
    for i in range(1, n):
        y[i] = 0.98 * y[i - 1] + eps[i]
    assert M.block_standard_error(y, M.trajectory_blocks(n, n_blocks=20)) > 3 * y.std() / math.sqrt(n)


def test_basin_free_energy_error_on_iid_labels():
    rng = np.random.default_rng(9)
    n = 20000
    p = np.array([0.6, 0.3, 0.1])
    lab = rng.choice(3, size=n, p=p)
    traj = np.repeat(np.arange(4), n // 4)
    time_ps = np.tile(np.arange(n // 4, dtype=float), 4)
    blocks = M.trajectory_blocks(n, traj, time_ps, n_blocks=100)
    out = M.basin_free_energies_with_errors(lab, blocks)
    for k, name in ((1, "alpha_R"), (2, "alpha_L")):
        naive = math.sqrt((1 / p[k] + 1 / p[0]) / n)  # delta method, multinomial counts
        assert out[f"dF_{name}_err"] == pytest.approx(naive, rel=0.3)
        assert out[f"dF_{name}"] == pytest.approx(-math.log(p[k] / p[0]), abs=4 * naive)


def test_trajectory_blocks_stay_within_trajectories():
    traj = np.repeat([3, 1, 2], [100, 50, 30])
    time_ps = np.concatenate([np.arange(100.0)[::-1], np.arange(50.0), np.arange(30.0)])
    b = M.trajectory_blocks(traj.size, traj, time_ps, n_blocks=10)
    for blk in np.unique(b):
        assert np.unique(traj[b == blk]).size == 1
        # contiguous in time within the trajectory
        t = np.sort(time_ps[b == blk])
        assert np.all(np.diff(t) == 1.0)
    assert np.unique(b).size >= 10
    many = np.repeat(np.arange(40), 5)
    b = M.trajectory_blocks(many.size, many, None, n_blocks=10)
    assert np.unique(b).size == 10
    for t in range(40):
        assert np.unique(b[many == t]).size == 1


def test_time_lagged_pairs_never_cross_trajectories():
    traj = np.repeat([0, 1], 20)
    t = np.tile(np.arange(20) * 0.5, 2)
    perm = np.random.default_rng(10).permutation(40)
    i, j = M.time_lagged_pairs(40, traj[perm], t[perm], lag_frames=3)
    assert i.size == 2 * 17
    assert np.all(traj[perm][i] == traj[perm][j])
    assert np.allclose(t[perm][j] - t[perm][i], 1.5)
    i2, j2 = M.time_lagged_pairs(40, traj[perm], t[perm], lag_ps=1.5)
    assert sorted(zip(i2, j2)) == sorted(zip(i, j))
    i3, _ = M.time_lagged_pairs(40, traj, t, lag_frames=25)
    assert i3.size == 0


def test_tica_recovers_the_slow_coordinate():
    rng = np.random.default_rng(11)
    n = 4000
    slow = np.empty(n)
    slow[0] = 0.0
    for k in range(1, n):
        slow[k] = 0.99 * slow[k - 1] + rng.normal(scale=0.14)
    feats = np.stack([slow + 0.1 * rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)], axis=1)
    model = M.tica_fit(feats, M.time_lagged_pairs(n, lag_frames=5), dim=2)
    proj = M.tica_project(model, feats)
    assert proj.shape == (n, 2)
    assert abs(np.corrcoef(proj[:, 0], slow)[0, 1]) > 0.9
    assert M.tica_w2(proj[:1000], proj[:1000]) == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError):
        M.tica_fit(feats, (np.arange(2), np.arange(2) + 1))


# ------------------------------------------------------------------------ molecules
@pytest.fixture(scope="module")
def aldp():
    md = pytest.importorskip("mdtraj")
    if not ALDP_PDB.exists():
        pytest.skip(f"{ALDP_PDB} missing")
    return md.load_pdb(str(ALDP_PDB))


def test_backbone_dihedrals_from_topology(aldp):
    import mdtraj as md

    ang, labels = M.backbone_dihedrals(aldp.xyz, aldp.topology)
    assert ang.shape == (1, 1, 2) and labels == ["ALA2"]
    ref = md.compute_dihedrals(aldp, [[4, 6, 8, 14], [6, 8, 14, 16]])
    assert np.allclose(ang[0, 0], ref[0], atol=1e-5)
    assert M.basin_labels(ang[:, 0])[0] == 0  # the PDB sits in C7eq/beta
    feats = M.tica_features(aldp.xyz, aldp.topology)
    assert feats.shape == (1, 45 + 4)  # 10 heavy atoms, sin/cos of phi and psi
    if ALA3_PDB.exists():
        t3 = md.load_pdb(str(ALA3_PDB))
        ang3, labels3 = M.backbone_dihedrals(t3.xyz, t3.topology)
        assert ang3.shape == (1, 2, 2) and len(labels3) == 2


def test_mirrored_aldp_is_wrong_chirality(aldp):
    x = np.repeat(aldp.xyz.astype(np.float64), 10, axis=0)
    x[5:] *= -1.0  # point inversion: D-alanine
    out = M.wrong_chirality_fraction(x, aldp.topology, aldp.xyz[0])
    assert out["n_chiral_centers"] == 1
    assert out["chirality_wrong_fraction"] == pytest.approx(0.5)
    w = np.array([1.0] * 5 + [3.0] * 5)
    assert M.wrong_chirality_fraction(x, aldp.topology, aldp.xyz[0], w)["chirality_wrong_fraction_weighted"] \
        == pytest.approx(0.75)
    # a proper rotation keeps the handedness
    c, s = math.cos(1.0), math.sin(1.0)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    assert M.wrong_chirality_fraction(aldp.xyz @ rot.T, aldp.topology, aldp.xyz[0])[
        "chirality_wrong_fraction"] == 0.0
