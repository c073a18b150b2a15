"""Sample-quality metrics: samples against a reference at the same temperature.

Every function here is pure: numpy arrays in, a float (or a small dict) out, no files, no
global state; randomness (subsampling for exact optimal transport) comes from an explicit
`numpy.random.Generator`. Importance weights are accepted wherever a distribution is
compared (`w_*` arguments): any non-negative array, normalised inside; `None` means equal
weights. `log_weights_to_weights` turns the `log_weight` dataset into such weights.

Conventions (see docs/METHOD.md, section 12):

* Energies are compared as U/kT (dimensionless), 1-D optimal transport, exact on the full
  sets (`energy_wasserstein`, via POT's quantile-function solver).
* Ramachandran angles are in radians, wrapped to [-pi, pi). phi/psi come from the topology
  with mdtraj (`backbone_dihedrals`): one (phi, psi) pair per residue that has both, so
  alanine dipeptide gives one pair and the tripeptide two.
* `ramachandran_kl`: KL(reference || samples) between 2-D histograms with `RAMA_BINS` = 60 x 60
  bins on [-pi, pi)^2 (6 degrees per bin). Each normalised histogram gets a pseudo-probability
  `RAMA_EPS` = 1e-6 added to every bin and is renormalised, so empty sample bins cost
  at most ln(1e-6) ≈ 13.8 nats times the reference mass there instead of infinity.
* `torus_w2`: exact OT (`ot.emd2`) between (sub)samples of the dihedral vectors with the
  wrapped squared cost sum_k min(|d_k|, 2 pi - |d_k|)^2 over all angles, square root at the end.
* Basins (`BASINS`, degrees, phi and psi in [-180, 180)):
    - alpha_L/C7ax ("alpha_L"): 0 <= phi < 120 (the whole right-hand strip, any psi);
    - the left-hand side is every other phi (phi < 0, plus 120 <= phi < 180, where the beta
      basin wraps across phi = +-180), split by psi:
        alpha_R: -120 <= psi < 50;
        C7eq/beta ("C7eq"): psi >= 50 or psi < -120 (beta, PII and C7eq; with
        amber99sbildn+OBC C7eq has no separate minimum, the region is one basin).
  Every frame belongs to exactly one basin. Delta F_b = -ln(p_b / p_C7eq) in kT.
  For several residues each residue's basins are computed separately.
* Block averaging (`trajectory_blocks`, `block_jackknife`): contiguous blocks in time within a
  trajectory (or whole trajectories when there are at least as many as blocks), leave-one-
  block-out jackknife standard error; on uncorrelated data it equals the naive standard error.
* `tica_fit`: deeptime TICA (kinetic-map scaling) on time-lagged pairs taken within a single
  trajectory only; features (`tica_features`): heavy-atom pairwise distances plus sin and cos of
  all backbone phi/psi. `tica_w2`: exact 2-D OT (squared Euclidean cost) on the first two
  components, square root at the end.
* `distance_w2`: 1-D W2 between the pooled distributions of all interatomic distances i < j.
* `kish_ess`: (sum w)^2 / sum w^2 from log-weights (`pita.weights.ess`).
* `wrong_chirality_fraction`: fraction of samples with at least one chiral centre whose sign
  differs from the reference structure's (uses `pita.chirality`).

Subsampling for exact OT (`subsample`): sets larger than `max_n` are thinned to at most `max_n`
support points: unweighted sets by uniform choice without replacement; weighted sets by
systematic resampling (counts -> weights), which keeps the weighted distribution unbiased.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from .weights import ess, normalized_weights, systematic_indices

TWO_PI = 2.0 * math.pi
RAMA_BINS = 60
RAMA_EPS = 1e-6
DEFAULT_OT_MAX_N = 2000

#: basin boundaries in degrees (see the module docstring)
BASIN_NAMES = ("C7eq", "alpha_R", "alpha_L")
ALPHA_L_PHI = (0.0, 120.0)  # [lo, hi)
ALPHA_R_PSI = (-120.0, 50.0)  # [lo, hi) on the left-hand side


# ------------------------------------------------------------------------------- weights
def normalize_weights(w: np.ndarray | None, n: int) -> np.ndarray:
    """Normalised non-negative weights of length n (uniform when `w` is None)."""
    if w is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(w, dtype=np.float64).reshape(-1)
    if w.shape[0] != n:
        raise ValueError(f"weights have length {w.shape[0]}, expected {n}")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be finite and non-negative")
    s = w.sum()
    if s <= 0:
        raise ValueError("weights sum to zero")
    return w / s


def log_weights_to_weights(log_weight: np.ndarray | None) -> np.ndarray | None:
    """exp(log_weight - max), normalised; None stays None (equal weights)."""
    if log_weight is None:
        return None
    return normalized_weights(log_weight)


def _is_uniform(w: np.ndarray) -> bool:
    return bool(np.allclose(w, w[0], rtol=1e-12, atol=0.0))


#: Kish effective sample size of log-weights (n when None): pita.weights.ess under its old name
kish_ess = ess


def subsample(x: np.ndarray, w: np.ndarray | None, max_n: int, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_n` support points (rows of x) with normalised weights representing (x, w).

    Unweighted: uniform choice without replacement. Weighted: systematic resampling into
    `max_n` draws, duplicates merged into counts.
    """
    x = np.asarray(x)
    n = x.shape[0]
    w = normalize_weights(w, n)
    if n <= max_n:
        return x, w
    if _is_uniform(w):
        idx = np.sort(rng.choice(n, size=max_n, replace=False))
        return x[idx], np.full(max_n, 1.0 / max_n)
    idx = systematic_indices(w, max_n, rng)
    uniq, counts = np.unique(idx, return_counts=True)
    return x[uniq], counts / counts.sum()


# -------------------------------------------------------------------------- 1-D transport
def wasserstein_1d(a: np.ndarray, b: np.ndarray, w_a: np.ndarray | None = None,
                   w_b: np.ndarray | None = None, p: int = 1) -> float:
    """Exact W_p between two weighted 1-D empirical distributions (POT, quantile functions)."""
    import ot

    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    wa = normalize_weights(w_a, a.size)
    wb = normalize_weights(w_b, b.size)
    cost = float(ot.wasserstein_1d(a, b, wa, wb, p=p))
    return max(cost, 0.0) ** (1.0 / p)


def energy_wasserstein(u_samples: np.ndarray, u_reference: np.ndarray, w_samples: np.ndarray | None = None,
                       w_reference: np.ndarray | None = None) -> dict[str, float]:
    """Energy W1 and W2 between reduced energies U/kT (pass energies already divided by kT)."""
    return {
        "energy_w1": wasserstein_1d(u_samples, u_reference, w_samples, w_reference, p=1),
        "energy_w2": wasserstein_1d(u_samples, u_reference, w_samples, w_reference, p=2),
    }


def energy_w1_floor_draws(u_reference: np.ndarray, w_reference: np.ndarray | None, n_effective: float,
                          rng: np.random.Generator, draws: int = 50) -> np.ndarray | None:
    """The energy W1 of `draws` exact sets of `n_effective` independent samples: each set drawn from
    the reference (by its weights), each W1 to the whole reference. None when `n_effective` is not
    finite."""
    if not math.isfinite(float(n_effective)):
        return None
    u = np.asarray(u_reference, dtype=np.float64).reshape(-1)
    m = int(min(max(round(float(n_effective)), 1), u.size))
    p = normalize_weights(w_reference, u.size)
    return np.array([wasserstein_1d(u[rng.choice(u.size, size=m, p=p)], u, None, w_reference)
                     for _ in range(draws)])


def energy_w1_floor(u_reference: np.ndarray, w_reference: np.ndarray | None, n_effective: float,
                    rng: np.random.Generator, draws: int = 50) -> float | None:
    """The energy W1 an exact sampler would show with `n_effective` independent samples: the mean of
    `energy_w1_floor_draws`. A finite set's W1 is positive even when it is exact (about 0.5 kT for
    200 draws of alanine dipeptide at 300 K), so a weighted set's W1 is read against this floor:
    near it, the set is as good as its effective size allows; far above it, the energies are biased."""
    w1 = energy_w1_floor_draws(u_reference, w_reference, n_effective, rng, draws)
    return None if w1 is None else float(np.mean(w1))


def pairwise_distances(positions: np.ndarray) -> np.ndarray:
    """All interatomic distances i < j, shape (N, n(n-1)/2)."""
    x = np.asarray(positions, dtype=np.float64)
    i, j = np.triu_indices(x.shape[1], k=1)
    return np.linalg.norm(x[:, i, :] - x[:, j, :], axis=-1)


def distance_w2(pos_samples: np.ndarray, pos_reference: np.ndarray, w_samples: np.ndarray | None = None,
                w_reference: np.ndarray | None = None, max_n: int = 5000,
                rng: np.random.Generator | None = None) -> float:
    """1-D W2 between the pooled distributions of all interatomic distances (frames subsampled
    to at most `max_n` per set; each distance carries its frame's weight)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    xs, ws = subsample(np.asarray(pos_samples), w_samples, max_n, rng)
    xr, wr = subsample(np.asarray(pos_reference), w_reference, max_n, rng)
    ds, dr = pairwise_distances(xs), pairwise_distances(xr)
    m = ds.shape[1]
    return wasserstein_1d(ds.reshape(-1), dr.reshape(-1), np.repeat(ws, m), np.repeat(wr, m), p=2)


# --------------------------------------------------------------------------- exact OT (n-D)
def _emd_w2(xa: np.ndarray, xb: np.ndarray, wa: np.ndarray, wb: np.ndarray,
            cost: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    import ot

    m = cost(xa, xb)
    w2sq = float(ot.emd2(wa, wb, m, numItermax=10_000_000))
    return math.sqrt(max(w2sq, 0.0))


def _sqeuclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[0]))
    for k in range(a.shape[1]):
        out += (a[:, k, None] - b[None, :, k]) ** 2
    return out


def wrap_angle(a: np.ndarray) -> np.ndarray:
    """Angles wrapped to [-pi, pi)."""
    return (np.asarray(a, dtype=np.float64) + math.pi) % TWO_PI - math.pi


def torus_sqdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise squared torus distance sum_k min(|d_k|, 2pi - |d_k|)^2, (n, k) x (m, k) -> (n, m)."""
    out = np.zeros((a.shape[0], b.shape[0]))
    for k in range(a.shape[1]):
        d = np.abs(wrap_angle(a[:, k, None] - b[None, :, k]))
        d = np.minimum(d, TWO_PI - d)
        out += d * d
    return out


def torus_w2(angles_samples: np.ndarray, angles_reference: np.ndarray, w_samples: np.ndarray | None = None,
             w_reference: np.ndarray | None = None, max_n: int = DEFAULT_OT_MAX_N,
             rng: np.random.Generator | None = None) -> float:
    """W2 on the torus between dihedral vectors (N, k) in radians, exact OT on <= max_n points each."""
    rng = rng if rng is not None else np.random.default_rng(0)
    a = np.asarray(angles_samples, dtype=np.float64).reshape(len(angles_samples), -1)
    b = np.asarray(angles_reference, dtype=np.float64).reshape(len(angles_reference), -1)
    xa, wa = subsample(a, w_samples, max_n, rng)
    xb, wb = subsample(b, w_reference, max_n, rng)
    return _emd_w2(xa, xb, wa, wb, torus_sqdist)


def euclidean_w2(x_samples: np.ndarray, x_reference: np.ndarray, w_samples: np.ndarray | None = None,
                 w_reference: np.ndarray | None = None, max_n: int = DEFAULT_OT_MAX_N,
                 rng: np.random.Generator | None = None) -> float:
    """W2 with squared Euclidean cost between (N, d) point clouds, exact OT on <= max_n points each."""
    rng = rng if rng is not None else np.random.default_rng(0)
    xa, wa = subsample(np.asarray(x_samples, dtype=np.float64), w_samples, max_n, rng)
    xb, wb = subsample(np.asarray(x_reference, dtype=np.float64), w_reference, max_n, rng)
    return _emd_w2(xa, xb, wa, wb, _sqeuclidean)


# ------------------------------------------------------------------------- dihedral angles
def backbone_dihedral_atoms(topology: Any) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """The atoms of (phi, psi) per residue that has both, with the residue labels (e.g. "ALA2"),
    in the order backbone_dihedrals reports them."""
    import mdtraj as md

    traj = md.Trajectory(np.zeros((1, topology.n_atoms, 3), dtype=np.float32), topology)
    phi_idx, _ = md.compute_phi(traj)
    psi_idx, _ = md.compute_psi(traj)
    # phi = C(i-1) N CA C: residue of atom 2; psi = N CA C N(i+1): residue of atom 1
    phi_res = {topology.atom(int(q[2])).residue.index: q for q in phi_idx}
    psi_res = {topology.atom(int(q[1])).residue.index: q for q in psi_idx}
    residues = sorted(set(phi_res) & set(psi_res))
    return [(phi_res[r], psi_res[r]) for r in residues], [str(topology.residue(r)) for r in residues]


def backbone_dihedrals(positions: np.ndarray, topology: Any) -> tuple[np.ndarray, list[str]]:
    """(phi, psi) per residue from the topology with mdtraj.

    Returns angles (N, R, 2) in radians in [-pi, pi) and R residue labels (e.g. "ALA2"); only
    residues with both a phi and a psi are kept (capped ALDP: one, the tripeptide: two).
    """
    import mdtraj as md

    atoms, labels = backbone_dihedral_atoms(topology)
    traj = md.Trajectory(np.asarray(positions, dtype=np.float32), topology)
    if not atoms:
        return np.zeros((traj.n_frames, 0, 2)), []
    quads = np.array([q for pair in atoms for q in pair])
    angles = md.compute_dihedrals(traj, quads)
    out = angles.reshape(traj.n_frames, len(atoms), 2)
    return wrap_angle(out), labels


def ramachandran_histogram(angles: np.ndarray, w: np.ndarray | None = None, bins: int = RAMA_BINS) -> np.ndarray:
    """Normalised weighted 2-D histogram (bins x bins) of (phi, psi) (N, 2) on [-pi, pi)^2."""
    a = wrap_angle(angles)
    w = normalize_weights(w, a.shape[0])
    h, _, _ = np.histogram2d(a[:, 0], a[:, 1], bins=bins, range=[[-math.pi, math.pi], [-math.pi, math.pi]],
                             weights=w)
    return h / h.sum()


def ramachandran_kl(angles_samples: np.ndarray, angles_reference: np.ndarray, w_samples: np.ndarray | None = None,
                    w_reference: np.ndarray | None = None, bins: int = RAMA_BINS, eps: float = RAMA_EPS) -> float:
    """KL(reference || samples) in nats between smoothed (phi, psi) histograms (see module doc)."""
    p = ramachandran_histogram(angles_reference, w_reference, bins) + eps
    q = ramachandran_histogram(angles_samples, w_samples, bins) + eps
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


# --------------------------------------------------------------------------------- basins
def basin_labels(angles: np.ndarray) -> np.ndarray:
    """Basin index per frame (0 = C7eq/beta, 1 = alpha_R, 2 = alpha_L/C7ax) from (N, 2) (phi, psi)."""
    deg = np.degrees(wrap_angle(angles))
    phi, psi = deg[:, 0], deg[:, 1]
    right = (phi >= ALPHA_L_PHI[0]) & (phi < ALPHA_L_PHI[1])
    alpha_r = ~right & (psi >= ALPHA_R_PSI[0]) & (psi < ALPHA_R_PSI[1])
    lab = np.zeros(deg.shape[0], dtype=np.int64)
    lab[alpha_r] = 1
    lab[right] = 2
    return lab


def basin_free_energies(labels: np.ndarray, w: np.ndarray | None = None) -> dict[str, float]:
    """Basin probabilities and Delta F_b = -ln(p_b / p_C7eq) in kT (inf/nan when a basin is empty)."""
    w = normalize_weights(w, labels.shape[0])
    p = np.array([w[labels == k].sum() for k in range(len(BASIN_NAMES))])
    out: dict[str, float] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        for k, name in enumerate(BASIN_NAMES):
            out[f"p_{name}"] = float(p[k])
            if k > 0:
                out[f"dF_{name}"] = float(-np.log(p[k] / p[0]))
    return out


def trajectory_blocks(n: int, trajectory: np.ndarray | None = None, time_ps: np.ndarray | None = None,
                      n_blocks: int = 10) -> np.ndarray:
    """Block id per frame for block averaging.

    Frames are ordered by (trajectory, time_ps) (file order where either is missing). With at
    least `n_blocks` trajectories, whole trajectories are grouped into `n_blocks` blocks;
    otherwise each trajectory is cut into ceil(n_blocks / n_traj) contiguous, nearly equal
    pieces in time. Blocks never straddle two trajectories.
    """
    traj = np.zeros(n, dtype=np.int64) if trajectory is None else np.asarray(trajectory).astype(np.int64)
    t = np.arange(n, dtype=np.float64) if time_ps is None else np.asarray(time_ps, dtype=np.float64)
    order = np.lexsort((np.arange(n), t, traj))
    ids, starts, counts = np.unique(traj[order], return_index=True, return_counts=True)
    blocks = np.empty(n, dtype=np.int64)
    n_traj = ids.size
    if n_traj >= n_blocks:
        for k, (s, c) in enumerate(zip(starts, counts)):
            blocks[order[s:s + c]] = (k * n_blocks) // n_traj
        return blocks
    per = -(-n_blocks // n_traj)
    nxt = 0
    for s, c in zip(starts, counts):
        for piece in np.array_split(order[s:s + c], min(per, c)):
            blocks[piece] = nxt
            nxt += 1
    return blocks


def block_jackknife(estimator: Callable[[np.ndarray], float], blocks: np.ndarray,
                    w: np.ndarray | None = None) -> float:
    """Leave-one-block-out jackknife standard error of `estimator(weights)`.

    `estimator` maps per-frame weights (those of one left-out block set to zero) to a number.
    """
    w = normalize_weights(w, blocks.shape[0])
    ids = np.unique(blocks)
    if ids.size < 2:
        return float("nan")
    vals = []
    for b in ids:
        wb = np.where(blocks == b, 0.0, w)
        if wb.sum() <= 0:
            return float("nan")
        vals.append(estimator(wb / wb.sum()))
    vals = np.asarray(vals, dtype=np.float64)
    if not np.all(np.isfinite(vals)):
        return float("inf")
    g = ids.size
    return float(math.sqrt((g - 1) / g * np.sum((vals - vals.mean()) ** 2)))


def block_standard_error(values: np.ndarray, blocks: np.ndarray, w: np.ndarray | None = None) -> float:
    """Block-jackknife standard error of the (weighted) mean of `values`."""
    v = np.asarray(values, dtype=np.float64)
    return block_jackknife(lambda ww: float(np.dot(ww, v)), blocks, w)


def basin_free_energies_with_errors(labels: np.ndarray, blocks: np.ndarray,
                                    w: np.ndarray | None = None) -> dict[str, float]:
    """`basin_free_energies` plus `dF_<basin>_err` from the block jackknife."""
    out = basin_free_energies(labels, w)
    for k, name in enumerate(BASIN_NAMES[1:], start=1):
        def est(ww: np.ndarray, k: int = k) -> float:
            p0, pk = ww[labels == 0].sum(), ww[labels == k].sum()
            return float(-np.log(pk / p0)) if p0 > 0 and pk > 0 else float("inf")

        out[f"dF_{name}_err"] = block_jackknife(est, blocks, w)
    return out


# -------------------------------------------------------------------------------- bootstrap
def statistical_inefficiency(values: np.ndarray, blocks: np.ndarray) -> float:
    """g = n SE_block^2 / var >= 1 (saved frames per independent one) from the block jackknife
    of the mean of `values` over `blocks` (1.0 when the values do not vary)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    var = float(np.var(v))
    se = block_standard_error(v, blocks)
    if not (var > 0) or not math.isfinite(se):
        return 1.0
    return max(1.0, v.size * se * se / var)


def lineage_inefficiency(values: np.ndarray, lineage: np.ndarray, w: np.ndarray | None = None) -> float:
    """g >= 1 for a set whose samples descend from a few independent draws (lineages): resampling
    copies a draw, moves that cannot leave a basin keep its copies together, so samples of one
    lineage are correlated. g is the ratio of the cluster-robust (sandwich) variance of the weighted
    mean of `values`, with the lineages as clusters and the small-sample factor G / (G - 1), to the
    variance the same estimate would have from independent samples:

        g = G / (G - 1) sum_c (sum_{i in c} w_i (v_i - mu))^2 / sum_i w_i^2 (v_i - mu)^2

    (w normalised; 1 when every sample is its own lineage). One lineage: g = n (one draw). Clipped
    to [1, n]."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = normalize_weights(w, v.size)
    r = w * (v - float(np.dot(w, v)))
    iid = float(np.sum(r * r))
    if not (iid > 0):
        return 1.0
    ids, inv = np.unique(np.asarray(lineage).reshape(-1), return_inverse=True)
    n_clusters = ids.size
    if n_clusters < 2:
        return float(v.size)
    clustered = float(np.sum(np.bincount(inv, weights=r) ** 2)) * n_clusters / (n_clusters - 1)
    return float(min(v.size, max(1.0, clustered / iid)))


def bootstrap_se(statistic: Callable[[np.ndarray], Any], n: int, n_boot: int, rng: np.random.Generator, *,
                 draw: int | None = None, n_target: float | None = None, g: float = 1.0) -> Any:
    """Bootstrap standard error of `statistic` over one set of `n` frames.

    Each replicate draws `draw` (default n) frame indices uniformly with replacement and calls
    `statistic(idx)`, which returns a float or a dict of floats. Weighted sets: the statistic
    uses w[idx] (pairs bootstrap: a frame's weight travels with it, normalised inside), which is
    the bootstrap of the self-normalised importance-sampling estimate. The standard deviation
    over replicates is scaled to the size the estimate was made with (m-out-of-n bootstrap,
    valid for statistics whose error falls like 1/sqrt(n)):

        se = sd_replicates * sqrt(g * draw / n_target)      (n_target defaults to n)

    `g` >= 1 is the statistical inefficiency of a time-correlated set (frames per independent
    one; 1 for independent samples). Replicates where a value is not finite (an empty basin)
    are left out of its sd; a value finite in fewer than half of them gets an se of inf.
    """
    if n_boot < 2 or n < 2:
        one = statistic(np.arange(n))
        return {k: float("nan") for k in one} if isinstance(one, dict) else float("nan")
    m = n if draw is None else int(draw)
    reps = [statistic(rng.integers(0, n, size=m)) for _ in range(n_boot)]
    scale = math.sqrt(max(g, 1.0) * m / float(n if n_target is None else n_target))

    def se_of(vals: list[float]) -> float:
        v = np.asarray(vals, dtype=np.float64)
        ok = np.isfinite(v)
        if ok.sum() < max(2, v.size / 2):
            return float("inf")
        return float(np.std(v[ok], ddof=1) * scale)

    if any(isinstance(r, dict) for r in reps):
        keys = sorted({k for r in reps for k in r})
        return {k: se_of([r.get(k, float("nan")) for r in reps]) for k in keys}
    return se_of(reps)


def ot_target_size(n: int, max_n: int) -> float:
    """The size whose 1/sqrt(n) error matches an OT estimate on a set of n frames subsampled to
    at most max_n support points: 1/n_target = 1/n (+ 1/max_n when subsampled)."""
    return 1.0 / (1.0 / n + (1.0 / max_n if n > max_n else 0.0))


# ------------------------------------------------------------------------------------ TICA
def heavy_atom_indices(topology: Any) -> np.ndarray:
    """Indices of atoms that are not hydrogen."""
    return np.array([a.index for a in topology.atoms if a.element is None or a.element.symbol != "H"],
                    dtype=np.int64)


def tica_features(positions: np.ndarray, topology: Any) -> np.ndarray:
    """Heavy-atom pairwise distances and sin/cos of every backbone phi and psi, (N, n_features)."""
    x = np.asarray(positions, dtype=np.float64)
    heavy = heavy_atom_indices(topology)
    feats = [pairwise_distances(x[:, heavy, :])]
    ang, _ = backbone_dihedrals(x, topology)
    ang = ang.reshape(x.shape[0], -1)
    if ang.shape[1]:
        feats += [np.sin(ang), np.cos(ang)]
    return np.concatenate(feats, axis=1)


def time_lagged_pairs(n: int, trajectory: np.ndarray | None = None, time_ps: np.ndarray | None = None,
                      lag_frames: int = 10, lag_ps: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with j `lag` after i in the same trajectory.

    `lag_ps` (needs `time_ps`): j is the frame of the same trajectory at time t_i + lag_ps
    (tolerance 1e-6 ps relative to the lag); otherwise j is `lag_frames` frames after i in
    time order. Without `trajectory` all frames form one trajectory.
    """
    traj = np.zeros(n, dtype=np.int64) if trajectory is None else np.asarray(trajectory).astype(np.int64)
    t = np.arange(n, dtype=np.float64) if time_ps is None else np.asarray(time_ps, dtype=np.float64)
    order = np.lexsort((np.arange(n), t, traj))
    _, starts, counts = np.unique(traj[order], return_index=True, return_counts=True)
    ii, jj = [], []
    for s, c in zip(starts, counts):
        idx = order[s:s + c]
        if lag_ps is not None and time_ps is not None:
            tt = t[idx]
            pos = np.searchsorted(tt, tt + lag_ps)
            ok = pos < c
            ok[ok] &= np.abs(tt[pos[ok]] - (tt[ok] + lag_ps)) <= 1e-6 * max(abs(lag_ps), 1.0)
            ii.append(idx[ok])
            jj.append(idx[pos[ok]])
        elif c > lag_frames:
            ii.append(idx[:-lag_frames] if lag_frames else idx)
            jj.append(idx[lag_frames:])
    if not ii:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    return np.concatenate(ii), np.concatenate(jj)


def tica_fit(features: np.ndarray, pairs: tuple[np.ndarray, np.ndarray], dim: int = 2) -> Any:
    """deeptime TICA model (kinetic map) fitted on time-lagged feature pairs (X_t, X_t+lag)."""
    from deeptime.decomposition import TICA

    i, j = pairs
    if i.size < 2 * features.shape[1]:
        raise ValueError(f"too few time-lagged pairs ({i.size}) for {features.shape[1]} TICA features")
    est = TICA(dim=dim, scaling="kinetic_map")
    est.partial_fit((features[i], features[j]))
    return est.fetch_model()


def tica_project(model: Any, features: np.ndarray, dim: int = 2) -> np.ndarray:
    """First `dim` TICA components of `features`."""
    return np.asarray(model.transform(features))[:, :dim]


def tica_w2(proj_samples: np.ndarray, proj_reference: np.ndarray, w_samples: np.ndarray | None = None,
            w_reference: np.ndarray | None = None, max_n: int = DEFAULT_OT_MAX_N,
            rng: np.random.Generator | None = None) -> float:
    """W2 between 2-D TICA projections (squared Euclidean cost, exact OT on <= max_n points each)."""
    return euclidean_w2(proj_samples, proj_reference, w_samples, w_reference, max_n=max_n, rng=rng)


# ------------------------------------------------------------------------------ chirality
def wrong_chirality_fraction(positions: np.ndarray, topology: Any, reference_positions: np.ndarray,
                             w: np.ndarray | None = None) -> dict[str, float]:
    """Fraction of samples with at least one chiral centre of the wrong handedness.

    Handedness is compared with `reference_positions` (one (n_atoms, 3) structure). Returns the
    plain fraction, the weighted fraction and the number of chiral centres (fractions are 0 for
    a molecule without chiral centres).
    """
    from .chirality import ChiralityChecker

    checker = ChiralityChecker.from_topology(topology, np.asarray(reference_positions, dtype=np.float64))
    if checker.n_centers == 0:
        return {"chirality_wrong_fraction": 0.0, "chirality_wrong_fraction_weighted": 0.0, "n_chiral_centers": 0}
    x = np.asarray(positions, dtype=np.float64)
    return {"chirality_wrong_fraction": checker.wrong_fraction(x),
            "chirality_wrong_fraction_weighted": checker.wrong_fraction(x, normalize_weights(w, x.shape[0])),
            "n_chiral_centers": checker.n_centers}


__all__: Sequence[str] = [
    "normalize_weights", "log_weights_to_weights", "kish_ess", "subsample", "wasserstein_1d",
    "energy_wasserstein", "pairwise_distances", "distance_w2", "wrap_angle", "torus_sqdist", "torus_w2",
    "euclidean_w2", "backbone_dihedrals", "ramachandran_histogram", "ramachandran_kl", "basin_labels",
    "basin_free_energies", "trajectory_blocks", "block_jackknife", "block_standard_error",
    "basin_free_energies_with_errors", "statistical_inefficiency", "lineage_inefficiency", "bootstrap_se", "ot_target_size",
    "heavy_atom_indices", "tica_features", "time_lagged_pairs", "tica_fit",
    "tica_project", "tica_w2", "wrong_chirality_fraction", "BASIN_NAMES", "RAMA_BINS", "RAMA_EPS",
]
