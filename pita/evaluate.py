"""Evaluate one rung: a sample set against reference MD at the same temperature.

`evaluate(samples, reference, system, out_dir)` computes the metrics of `pita.metrics`, writes
`out_dir/metrics.json` atomically and PNG plots beside it, and returns the metrics dict.

What is compared with what:

* Weighted sets (a `log_weight` dataset, e.g. the output of `anneal`) are evaluated by their
  normalised importance weights: every distribution (energies, dihedrals, TICA projections,
  distances, basin populations) is the weighted one, and `ess`/`ess_fraction` say how many
  samples those weights are worth. The reference is normally unweighted; weights are honoured
  if it has them. Subsampling for exact OT keeps weighted sets unbiased (systematic resampling).
* Energies are the stored `energy` datasets divided by k_B T of the common temperature.
* Molecules (a system with an mdtraj topology): everything. Particle systems without topology
  (Lennard-Jones): energy W1/W2, pairwise-distance W2 and ESS only.
* Residues: every residue with a (phi, psi) pair (ALDP: ALA2; the tripeptide: ALA2 and ALA3)
  gets its own Ramachandran KL, torus W2 and basin free energies, in `per_residue`
  ({"ALA2": {"rama_kl": ..., "torus_w2": ..., "dF_alpha_R": ..., ...}, ...}) and, for
  summary.csv, as flat keys with the residue in the name (rama_kl_ALA3, dF_alpha_R_ALA3_ref, ...);
  `residues` lists them. Summary scalars: `torus_w2` on the joint torus of all residues' angles,
  `rama_kl` the mean over residues, `rama_kl_max`, `torus_w2_max_residue`, `dF_diff_max_abs`.
  Plots: one Ramachandran PNG per residue (samples and reference side by side),
  ramachandran.png for one residue, ramachandran_<residue>.png for several.
* Error bars: basin free energies of the reference carry block-jackknife errors along its
  trajectories (`trajectory`/`time_ps`, file order when absent).
* Cost: `n_energy_evals` and `n_energy_evals_total` come from the sample set's attributes,
  `wall_time_s` from its attribute of that name when the producing step recorded one, and
  `eval_wall_time_s` is the time this evaluation took. The reference MD's count is reported
  separately as `reference_n_energy_evals`. Baselines (`pita baseline`) also carry their budget
  (`n_energy_evals_budget`) and, for replica exchange, the swap acceptance per pair and overall.

Keys whose value is not finite (an empty basin, too little data for TICA) are written as null.
"""
from __future__ import annotations

import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .errors import PitaInputError
from .provenance import atomic_path, atomic_write_json, now_iso
from .samples import SampleSet

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
#: sample-set attributes of a baseline copied into its metrics.json
BASELINE_ATTRS = ("n_energy_evals_budget", "walkers", "replicas_per_temperature", "swap_every", "swap_pairs",
                  "swap_acceptance", "swap_acceptance_mean",
                  # smc: particles, bridge levels and acceptance per rung
                  "smc_particles", "smc_bridge_levels", "smc_bridge_capped", "smc_bridge_accept_mean",
                  "smc_relax_accept", "smc_torsion_accept", "smc_unique_ancestors", "smc_extra_steps")
PLOT_FILES = {"energy": "energy.png", "distances": "distances.png", "ramachandran": "ramachandran.png",
              "tica": "tica.png", "profiles": "free_energy_profiles.png"}
#: bins of the 1-D phi / psi free-energy profiles (10 degrees)
PROFILE_BINS = 36


def _kT(system: Any, samples: SampleSet) -> float:
    if system is not None and hasattr(system, "kT"):
        return float(system.kT(samples.temperature))
    from . import KB_KJ_PER_MOL_K

    kb = KB_KJ_PER_MOL_K if samples.attrs.get("units") == "kJ/mol,nm" else 1.0
    return kb * samples.temperature


def _jsonable(obj: Any) -> Any:
    """Non-finite floats -> None, numpy scalars -> Python (json would write invalid NaN)."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def check_inputs(samples: SampleSet, reference: SampleSet, system: Any = None, samples_path: str = "<samples>",
                 reference_path: str = "<reference>") -> None:
    """Raise PitaInputError unless both sets are at the same temperature and fit the system."""
    if not np.isclose(samples.temperature, reference.temperature, rtol=1e-6, atol=1e-9):
        raise PitaInputError(
            f"{reference_path}: reference temperature {reference.temperature:g} differs from the samples' "
            f"temperature {samples.temperature:g} ({samples_path}); evaluate against reference MD at the same T")
    if samples.positions.shape[1:] != reference.positions.shape[1:]:
        raise PitaInputError(
            f"{reference_path}: positions have shape {list(reference.positions.shape[1:])} per sample but "
            f"{samples_path} has {list(samples.positions.shape[1:])}")
    n_atoms = getattr(system, "n_atoms", None) if system is not None else None
    if n_atoms is not None and samples.n_atoms != n_atoms:
        raise PitaInputError(f"{samples_path}: {samples.n_atoms} atoms per sample but the system has {n_atoms}")
    names = {str(samples.attrs.get("system")), str(reference.attrs.get("system"))}
    if len(names) > 1:
        log.warning("sample sets name different systems: %s (%s) vs %s (%s)", samples.attrs.get("system"),
                    samples_path, reference.attrs.get("system"), reference_path)


def _weights(s: SampleSet) -> np.ndarray | None:
    return None if s.log_weight is None else s.weights()


def _basin_metrics(ang_s: np.ndarray, ang_r: np.ndarray, labels: list[str], ws, wr, blocks) -> dict:
    """Basin populations and free energies per residue: {label: {p_C7eq, ..., dF_alpha_R_ref_err, ...}}."""
    out: dict[str, dict[str, Any]] = {}
    for r, lab in enumerate(labels):
        res: dict[str, Any] = {}
        fs = M.basin_free_energies(M.basin_labels(ang_s[:, r]), ws)
        fr = M.basin_free_energies_with_errors(M.basin_labels(ang_r[:, r]), blocks, wr)
        for name in M.BASIN_NAMES:
            res[f"p_{name}"] = fs[f"p_{name}"]
            res[f"p_{name}_ref"] = fr[f"p_{name}"]
        for name in M.BASIN_NAMES[1:]:
            key = f"dF_{name}"
            res[key] = fs[key]
            res[f"{key}_ref"] = fr[key]
            res[f"{key}_ref_err"] = fr[f"{key}_err"]
            res[f"{key}_diff"] = fs[key] - fr[key]
        out[lab] = res
    return out


def _residue_metrics(ang_s: np.ndarray, ang_r: np.ndarray, labels: list[str], ws, wr, blocks, ot_max_n: int,
                     rng: np.random.Generator, joint_torus_w2: float) -> dict[str, dict[str, Any]]:
    """Ramachandran metrics of every residue with a (phi, psi) pair, keyed by residue label:
    rama_kl, torus_w2 (on that residue's (phi, psi) torus), basin populations and free energies."""
    basins = _basin_metrics(ang_s, ang_r, labels, ws, wr, blocks)
    out: dict[str, dict[str, Any]] = {}
    for r, lab in enumerate(labels):
        tw2 = joint_torus_w2 if len(labels) == 1 else M.torus_w2(ang_s[:, r], ang_r[:, r], ws, wr, max_n=ot_max_n,
                                                                 rng=rng)
        res: dict[str, Any] = {"rama_kl": M.ramachandran_kl(ang_s[:, r], ang_r[:, r], ws, wr), "torus_w2": tw2}
        res.update(basins[lab])
        out[lab] = res
    return out


_KEY_SUFFIXES = ("_ref_err", "_ref", "_diff")


def _residue_key(key: str, label: str) -> str:
    """Flat key of one residue's value: the residue goes before _ref/_ref_err/_diff
    (dF_alpha_R_ref_err, ALA3 -> dF_alpha_R_ALA3_ref_err; rama_kl, ALA2 -> rama_kl_ALA2)."""
    for suffix in _KEY_SUFFIXES:
        if key.endswith(suffix):
            return f"{key[:-len(suffix)]}_{label}{suffix}"
    return f"{key}_{label}"


def _flatten_residues(per_residue: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Flat scalar keys (summary.csv) and summary scalars from the per-residue metrics.

    One residue (ALDP): its values under the plain names (rama_kl, p_C7eq, dF_alpha_R, ...).
    Several (tripeptide): every value with the residue in its name (rama_kl_ALA2, torus_w2_ALA3,
    dF_alpha_R_ALA2_ref, dF_alpha_R_ALA2_ref_err, ...) plus the summaries rama_kl (mean over
    residues), rama_kl_max and torus_w2_max_residue. Always: dF_diff_max_abs, the largest
    |dF - dF_ref| over residues and basins (inf when a basin is empty on one side only; basins
    empty on both sides are skipped). torus_w2 itself (the W2 on the joint torus of all angles)
    is computed by the caller.
    """
    out: dict[str, Any] = {}
    labels = list(per_residue)
    if len(labels) == 1:
        out.update({k: v for k, v in per_residue[labels[0]].items() if k != "torus_w2"})
    else:
        for lab, res in per_residue.items():
            out.update({_residue_key(k, lab): v for k, v in res.items()})
        out["rama_kl"] = float(np.mean([per_residue[lab]["rama_kl"] for lab in labels]))
        out["rama_kl_max"] = float(max(per_residue[lab]["rama_kl"] for lab in labels))
        out["torus_w2_max_residue"] = float(max(per_residue[lab]["torus_w2"] for lab in labels))
    diffs = []
    for res in per_residue.values():
        for name in M.BASIN_NAMES[1:]:
            f, f_ref = res[f"dF_{name}"], res[f"dF_{name}_ref"]
            if math.isfinite(f) and math.isfinite(f_ref):
                diffs.append(abs(f - f_ref))
            elif math.isfinite(f) or math.isfinite(f_ref):
                diffs.append(float("inf"))  # a basin empty on one side only
    out["dF_diff_max_abs"] = float(max(diffs)) if diffs else float("nan")
    return out


def _inefficiency(s: SampleSet, angles: np.ndarray | None, n_blocks: int) -> tuple[float, float]:
    """Statistical inefficiencies (g_energy, g_conformation): of the energy, and the largest over
    each basin's indicator (the slowest observable; the energy's for systems without basins).
    A time-correlated set (frames of trajectories with several frames each: MD, the reference):
    from block averaging. A set whose samples share lineages (`extra/ancestor`: FK-SMC and
    resample-move sets, PITA's and the smc baseline's): the cluster-robust ratio over lineages
    (`pita.metrics.lineage_inefficiency`). (1, 1) for separate draws."""
    lineage = s.lineage()
    in_trajectories = s.trajectory is not None and np.unique(s.trajectory).size < len(s)
    if not in_trajectories and (lineage is None or np.unique(lineage).size >= len(s)):
        return 1.0, 1.0
    values = []
    if angles is not None:
        for r in range(angles.shape[1]):
            lab = M.basin_labels(angles[:, r])
            values += [(lab == k).astype(np.float64) for k in range(len(M.BASIN_NAMES))]
    if in_trajectories:
        blocks = M.trajectory_blocks(len(s), s.trajectory, s.time_ps, n_blocks)
        g_of = lambda v: M.statistical_inefficiency(v, blocks)  # noqa: E731
    else:
        w = _weights(s)
        g_of = lambda v: M.lineage_inefficiency(v, lineage, w)  # noqa: E731
    g_energy = g_of(s.energy)
    return g_energy, max([g_of(v) for v in values], default=g_energy)


def _g_of(key: str, g: tuple[float, float]) -> float:
    """The inefficiency that scales a metric's se: the energy's for energies and distances (fast),
    the slowest basin's for everything conformational (Ramachandran, basins, torus, TICA)."""
    return g[0] if key.startswith(("energy", "distance")) else g[1]


def _flat(per_residue: dict[str, dict[str, float]]) -> dict[str, float]:
    """Flat keys as in metrics.json: plain names for one residue, the residue in the name for several."""
    labels = list(per_residue)
    if len(labels) == 1:
        return dict(per_residue[labels[0]])
    out = {_residue_key(k, lab): v for lab, res in per_residue.items() for k, v in res.items()}
    if "rama_kl" in per_residue[labels[0]]:
        out["rama_kl"] = float(np.mean([per_residue[lab]["rama_kl"] for lab in labels]))
    return out


def bootstrap_errors(samples: SampleSet, reference: SampleSet, data: dict, *, n_boot: int, ot_samples: int,
                     ot_max_n: int, distance_max_n: int, n_blocks: int, seed: int) -> tuple[dict, dict]:
    """Bootstrap standard errors of every metric: ({<key>: se}, bookkeeping).

    Each set is resampled on its own (the other held fixed) and the two variances add:
    se^2 = se_samples^2 + se_reference^2. Frames are drawn with replacement, weights travelling
    with their frames (`pita.metrics.bootstrap_se`). Energy W1/W2, Ramachandran KL, basin
    populations and Delta F are recomputed on full-size replicates; the optimal-transport metrics
    (torus, TICA, distance W2) on `ot_samples` frames per replicate (the other set: a fixed
    subsample of that size), scaled to the size the estimate used (m-out-of-n). A time-correlated
    set (MD) scales by its statistical inefficiency g (`_inefficiency`). Deterministic for a seed;
    a separate random stream, so the metrics themselves do not depend on it.
    """
    rng = np.random.default_rng([int(seed), 7919])
    ws, wr = data["ws"], data["wr"]
    u_s, u_r = data["u_s"], data["u_r"]
    ang_s, ang_r = data.get("ang_s"), data.get("ang_r")
    labels = data.get("residues") or []
    n_s, n_r = len(u_s), len(u_r)
    g_s = _inefficiency(samples, ang_s, n_blocks)
    g_r = _inefficiency(reference, ang_r, n_blocks)

    def pick(a: np.ndarray | None, idx: np.ndarray | None) -> np.ndarray | None:
        return a if a is None or idx is None else a[idx]

    def ok(w: np.ndarray | None) -> bool:
        return w is None or float(np.sum(w)) > 0

    def cheap(i_s: np.ndarray | None, i_r: np.ndarray | None) -> dict[str, float]:
        a, b = pick(ws, i_s), pick(wr, i_r)
        if not (ok(a) and ok(b)):
            return {}
        out = dict(M.energy_wasserstein(pick(u_s, i_s), pick(u_r, i_r), a, b))
        out["energy_mean"] = float(np.dot(M.normalize_weights(a, len(pick(u_s, i_s))), pick(u_s, i_s)))
        per: dict[str, dict[str, float]] = {}
        for r, lab in enumerate(labels):
            xs, xr = pick(ang_s, i_s)[:, r], pick(ang_r, i_r)[:, r]
            fs = M.basin_free_energies(M.basin_labels(xs), a)
            fr = M.basin_free_energies(M.basin_labels(xr), b)
            res = {"rama_kl": M.ramachandran_kl(xs, xr, a, b)}
            for name in M.BASIN_NAMES:
                res[f"p_{name}"], res[f"p_{name}_ref"] = fs[f"p_{name}"], fr[f"p_{name}"]
            for name in M.BASIN_NAMES[1:]:
                key = f"dF_{name}"
                res[key], res[f"{key}_ref"], res[f"{key}_diff"] = fs[key], fr[key], fs[key] - fr[key]
            per[lab] = res
        if per:
            out.update(_flat(per))
        return out

    m_s, m_r = min(ot_samples, n_s), min(ot_samples, n_r)
    fix_s = np.sort(rng.choice(n_s, size=m_s, replace=False))
    fix_r = np.sort(rng.choice(n_r, size=m_r, replace=False))
    particles = samples.positions.ndim == 3

    def ot(i_s: np.ndarray, i_r: np.ndarray) -> dict[str, float]:
        a, b = pick(ws, i_s), pick(wr, i_r)
        if not (ok(a) and ok(b)):
            return {}
        out: dict[str, float] = {}
        big = max(len(i_s), len(i_r))
        if particles:
            out["distance_w2"] = M.distance_w2(samples.positions[i_s], reference.positions[i_r], a, b, max_n=big)
        if labels:
            out["torus_w2"] = M.torus_w2(ang_s[i_s].reshape(len(i_s), -1), ang_r[i_r].reshape(len(i_r), -1), a, b,
                                         max_n=big)
            if len(labels) > 1:
                for r, lab in enumerate(labels):
                    out[_residue_key("torus_w2", lab)] = M.torus_w2(ang_s[i_s, r], ang_r[i_r, r], a, b, max_n=big)
        if "tica_s" in data:
            out["tica_w2"] = M.tica_w2(data["tica_s"][i_s], data["tica_r"][i_r], a, b, max_n=big)
        return out

    t_ot_s, t_ot_r = M.ot_target_size(n_s, ot_max_n), M.ot_target_size(n_r, ot_max_n)
    t_d_s, t_d_r = M.ot_target_size(n_s, distance_max_n), M.ot_target_size(n_r, distance_max_n)
    side_s = M.bootstrap_se(lambda i: cheap(i, None), n_s, n_boot, rng)
    side_r = M.bootstrap_se(lambda i: cheap(None, i), n_r, n_boot, rng)
    ot_s = M.bootstrap_se(lambda i: ot(i, fix_r), n_s, n_boot, rng, draw=m_s, n_target=t_ot_s)
    ot_r = M.bootstrap_se(lambda i: ot(fix_s, i), n_r, n_boot, rng, draw=m_r, n_target=t_ot_r)
    if "distance_w2" in ot_s:  # its estimate used distance_max_n frames, not ot_max_n
        ot_s["distance_w2"] *= math.sqrt(t_ot_s / t_d_s)
        ot_r["distance_w2"] *= math.sqrt(t_ot_r / t_d_r)
    for side, g in ((side_s, g_s), (ot_s, g_s), (side_r, g_r), (ot_r, g_r)):
        for k in side:
            side[k] *= math.sqrt(_g_of(k, g))
    se: dict[str, float] = {}
    from_ref: dict[str, float] = {}
    for a, b in ((side_s, side_r), (ot_s, ot_r)):
        for k in set(a) | set(b):
            va, vb = a.get(k, 0.0), b.get(k, 0.0)
            se[k] = math.sqrt(va * va + vb * vb)
            from_ref[k] = vb
    info = {"replicates": int(n_boot), "ot_samples": [int(m_s), int(m_r)], "g_samples": list(g_s), "g_reference": list(g_r),
            "se_from_reference": {k: from_ref[k] for k in sorted(from_ref) if k in HEADLINE_SE}}
    return se, info


#: the metrics of a cross-check against a second reference (besides every p_* and dF_*)
CROSS_CHECK_KEYS = ("energy_w1", "energy_w2", "torus_w2", "rama_kl", "tica_w2", "distance_w2", "n_blocks")


#: metrics whose reference share of the bootstrap se is kept in metrics.json's `bootstrap`
HEADLINE_SE = ("energy_w1", "energy_w2", "torus_w2", "rama_kl", "tica_w2", "distance_w2", "dF_alpha_R",
               "dF_alpha_L", "dF_alpha_R_diff", "dF_alpha_L_diff")


def compute_metrics(samples: SampleSet, reference: SampleSet, system: Any = None, *, seed: int = 0,
                    ot_max_n: int = M.DEFAULT_OT_MAX_N, distance_max_n: int = 5000, tica_lag_frames: int = 10,
                    tica_lag_ps: float | None = None, n_blocks: int = 10, bootstrap: int = 0,
                    bootstrap_ot_samples: int = 500,
                    samples_path: str = "<samples>", reference_path: str = "<reference>",
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """All metrics (dict) plus the arrays the plots need (dict); no files are written.

    `bootstrap` > 0: that many bootstrap replicates give `<metric>_se` for every metric
    (`bootstrap_errors`; per residue too) and a `bootstrap` entry with how they were made."""
    check_inputs(samples, reference, system, samples_path, reference_path)
    rng = np.random.default_rng(seed)
    kT = _kT(system, samples)
    ws, wr = _weights(samples), _weights(reference)
    out: dict[str, Any] = {}
    data: dict[str, Any] = {"ws": ws, "wr": wr}

    u_s, u_r = samples.energy / kT, reference.energy / kT
    data["u_s"], data["u_r"] = u_s, u_r
    out.update(M.energy_wasserstein(u_s, u_r, ws, wr))
    out["energy_mean"] = float(np.dot(M.normalize_weights(ws, len(u_s)), u_s))
    out["energy_mean_ref"] = float(np.dot(M.normalize_weights(wr, len(u_r)), u_r))
    out["ess"] = M.kish_ess(samples.log_weight, len(samples))
    out["ess_fraction"] = out["ess"] / len(samples)
    # the W1 an exact set of this effective size would show: lineages and time correlation shrink it
    # below the Kish ESS; a separate random stream, so the other metrics do not depend on it
    g_energy = max(_inefficiency(samples, None, n_blocks)[0], 1.0)
    out["energy_n_effective"] = out["ess"] / g_energy
    floor_draws = M.energy_w1_floor_draws(u_r, wr, out["energy_n_effective"],
                                          np.random.default_rng([int(seed), 104729]))
    # mean and 90th percentile: a set at its floor lies below the q90 nine times in ten
    out["energy_w1_floor"], out["energy_w1_floor_q90"] = (None, None) if floor_draws is None else (
        float(np.mean(floor_draws)), float(np.quantile(floor_draws, 0.9)))

    particles = samples.positions.ndim == 3
    if particles:
        out["distance_w2"] = M.distance_w2(samples.positions, reference.positions, ws, wr,
                                           max_n=distance_max_n, rng=rng)
        plot_rng = np.random.default_rng(seed + 1)  # separate stream: metrics do not depend on plotting
        for key, s, w in (("dist_s", samples, ws), ("dist_r", reference, wr)):
            x, wx = M.subsample(s.positions, w, 1000, plot_rng)
            d = M.pairwise_distances(x)
            data[key] = (d.reshape(-1), np.repeat(wx, d.shape[1]))

    topology = getattr(system, "topology", None) if system is not None else None
    if topology is not None and particles:
        ang_s, labels = M.backbone_dihedrals(samples.positions, topology)
        ang_r, _ = M.backbone_dihedrals(reference.positions, topology)
        data.update(ang_s=ang_s, ang_r=ang_r, residues=labels)
        out["residues"] = labels
        if labels:
            # joint torus W2 over every residue's (phi, psi); per-residue values in per_residue
            out["torus_w2"] = M.torus_w2(ang_s.reshape(len(samples), -1), ang_r.reshape(len(reference), -1),
                                         ws, wr, max_n=ot_max_n, rng=rng)
            blocks = M.trajectory_blocks(len(reference), reference.trajectory, reference.time_ps, n_blocks)
            out["n_blocks"] = int(np.unique(blocks).size)
            data["ref_blocks"] = blocks
            per_residue = _residue_metrics(ang_s, ang_r, labels, ws, wr, blocks, ot_max_n, rng, out["torus_w2"])
            out["per_residue"] = data["per_residue"] = per_residue
            out.update(_flatten_residues(per_residue))
        # TICA on the reference's time-lagged frames
        try:
            feats_r = M.tica_features(reference.positions, topology)
            pairs = M.time_lagged_pairs(len(reference), reference.trajectory, reference.time_ps,
                                        lag_frames=tica_lag_frames, lag_ps=tica_lag_ps)
            model = M.tica_fit(feats_r, pairs, dim=2)
            proj_r = M.tica_project(model, feats_r)
            proj_s = M.tica_project(model, M.tica_features(samples.positions, topology))
            data.update(tica_s=proj_s, tica_r=proj_r)
            out["tica_w2"] = M.tica_w2(proj_s, proj_r, ws, wr, max_n=ot_max_n, rng=rng)
            out["tica_lag"] = f"{tica_lag_ps} ps" if tica_lag_ps is not None else f"{tica_lag_frames} frames"
            out["tica_n_pairs"] = int(pairs[0].size)
        except ValueError as exc:
            log.warning("TICA skipped: %s", exc)
            out["tica_w2"] = None
            out["tica_note"] = str(exc)
        ref_pos = getattr(system, "reference_positions", None)
        if ref_pos is None:
            ref_pos = reference.positions[0]
        out.update(M.wrong_chirality_fraction(samples.positions, topology, ref_pos, ws))
    if bootstrap > 0:
        se, info = bootstrap_errors(samples, reference, data, n_boot=bootstrap, ot_samples=bootstrap_ot_samples,
                                    ot_max_n=ot_max_n, distance_max_n=distance_max_n, n_blocks=n_blocks, seed=seed)
        if out.get("tica_w2") is None:
            se.pop("tica_w2", None)
        out.update({f"{k}_se": v for k, v in sorted(se.items())})
        labels = data.get("residues") or []
        for lab, res in (data.get("per_residue") or {}).items():
            for k in list(res):
                flat = k if len(labels) == 1 else _residue_key(k, lab)
                if flat in se:
                    res[f"{k}_se"] = se[flat]
        out["bootstrap"] = info
    return out, data


def _provenance(samples: SampleSet, reference: SampleSet, samples_path: str, reference_path: str,
                method: str | None) -> dict:
    a, r = samples.attrs, reference.attrs

    def num(v: Any) -> Any:
        try:
            return int(v)
        except (TypeError, ValueError):
            return None

    return {
        "method": method or a.get("method") or "pita",
        "system": a.get("system"),
        "temperature": samples.temperature,
        "units": a.get("units"),
        "rung": num(a.get("rung")),
        "producing_step": a.get("producing_step"),
        "n_samples": len(samples),
        "n_reference": len(reference),
        "weighted": samples.log_weight is not None,
        "n_energy_evals": num(a.get("n_energy_evals")),
        "n_energy_evals_total": num(a.get("n_energy_evals_total")),
        "reference_n_energy_evals": num(r.get("n_energy_evals_total", r.get("n_energy_evals"))),
        "wall_time_s": a.get("wall_time_s"),
        "samples": samples_path,
        "reference": reference_path,
        "samples_config_digest": a.get("config_digest"),
        "reference_config_digest": r.get("config_digest"),
        # baselines (pita.baselines): their budget and replica exchange's swap acceptance
        **{k: a[k] for k in BASELINE_ATTRS if k in a},
    }


def evaluate(samples: SampleSet, reference: SampleSet, system: Any = None, out_dir: str | Path | None = None, *,
             metrics_path: str | Path | None = None, plots: bool = True, seed: int = 0,
             samples_path: str | None = None, reference_path: str | None = None, method: str | None = None,
             extra: dict | None = None, cross_check: SampleSet | None = None, cross_check_path: str | None = None,
             basin_reference: dict | None = None, basin_reference_path: str | None = None,
             plots_dir: str | Path | None = None, **metric_options: Any) -> dict[str, Any]:
    """Compare `samples` with `reference` (same temperature) and write metrics.json + plots.

    `out_dir`: folder for metrics.json and the PNGs (None: write nothing unless `metrics_path`).
    `metrics_path`: where metrics.json goes (default out_dir/metrics.json); plots go beside it, or
    into `plots_dir` (the workflow's rung_k/plots/, declared for `snakemake --report`).
    `metric_options`: ot_max_n, distance_max_n, tica_lag_frames, tica_lag_ps, n_blocks.
    `extra`: further scalars for metrics.json (the ESS and model fidelity of the steps behind the set).
    `cross_check`: a second reference at the same temperature; the headline metrics, basin
    populations and free energies against it (no bootstrap, no plots) go under `cross_check`.
    `basin_reference`: basin free energies from an independent method (`pita umbrella --combine`);
    the samples' differences from them go under `basin_reference`.
    Raises PitaInputError (naming the file) when the temperatures or shapes differ.
    """
    t0 = time.perf_counter()
    sp = samples_path or "<samples>"
    rp = reference_path or "<reference>"
    values, data = compute_metrics(samples, reference, system, seed=seed, samples_path=sp, reference_path=rp,
                                   **metric_options)
    result: dict[str, Any] = _provenance(samples, reference, sp, rp, method)
    result.update(values)
    result.update(extra or {})
    if cross_check is not None:
        cp = cross_check_path or "<cross-check>"
        options = {k: v for k, v in metric_options.items() if k not in ("bootstrap", "bootstrap_ot_samples")}
        cc, _ = compute_metrics(samples, cross_check, system, seed=seed, samples_path=sp, reference_path=cp, **options)
        result["cross_check"] = {"reference": cp, "n_reference": len(cross_check),
                                 **{k: v for k, v in cc.items() if k in CROSS_CHECK_KEYS or k.startswith(("p_", "dF_"))}}
    if basin_reference is not None:
        result["basin_reference"] = compare_basin_reference(result, basin_reference,
                                                            basin_reference_path or "<basin reference>",
                                                            samples.temperature, samples.attrs.get("system"))
    result["seed"] = int(seed)
    result["evaluated"] = now_iso()

    if metrics_path is None and out_dir is not None:
        metrics_path = Path(out_dir) / METRICS_FILE
    if metrics_path is not None:
        metrics_path = Path(metrics_path)
        if plots:
            pdir = Path(plots_dir) if plots_dir is not None else metrics_path.parent
            names = _write_plots_atomically(data, pdir, temperature=samples.temperature,
                                            units=samples.attrs.get("units"))
            # relative to metrics.json (the report resolves them from there)
            result["plots"] = [os.path.relpath(pdir / n, metrics_path.parent) for n in names]
        result["eval_wall_time_s"] = time.perf_counter() - t0
        atomic_write_json(metrics_path, _jsonable(result))
        log.info("wrote %s", metrics_path)
    else:
        result["eval_wall_time_s"] = time.perf_counter() - t0
    return _jsonable(result)


def check_basin_reference(basins: dict, path: str, temperature: float, system_name: str | None) -> None:
    """Refuse (one line naming the file and field) a basin reference that does not fit the samples:
    another temperature or system, or basins without finite dF and se."""
    def fail(field: str, problem: str):
        raise PitaInputError(f"{path}: {field}: {problem}")

    if not isinstance(basins.get("basins"), dict):
        fail("basins", "missing; not a `pita umbrella --combine` file")
    t_ref = basins.get("temperature")
    if not isinstance(t_ref, (int, float)) or abs(float(t_ref) - float(temperature)) > 1e-6 * max(1.0, temperature):
        fail("temperature", f"{t_ref!r} K, but the samples are at {temperature:g} K")
    if system_name is not None and basins.get("system") != system_name:
        fail("system", f"{basins.get('system')!r}, but the samples are of {system_name!r}")
    for name in M.BASIN_NAMES[1:]:
        ref = basins["basins"].get(name)
        ok = isinstance(ref, dict) and all(isinstance(ref.get(k), (int, float)) and not isinstance(ref.get(k), bool)
                                           and math.isfinite(ref[k]) for k in ("dF", "se"))
        if not ok or ref["se"] < 0:
            fail(f"basins.{name}", "needs finite numbers dF and se >= 0")


def compare_basin_reference(values: dict, basins: dict, path: str, temperature: float,
                            system_name: str | None) -> dict:
    """A sample set's basin free energies (in `values`, as compute_metrics gives them) against a
    basin reference (`pita umbrella --combine` output): per basin the reference value and
    error, the difference (samples - reference), its standard error (the samples' bootstrap se and
    the reference's, in quadrature) and the difference in units of that se (None where the basin is
    empty in the samples or its se is unknown or infinite)."""
    check_basin_reference(basins, path, temperature, system_name)
    per_residue = values.get("per_residue") or {}
    labels = list(per_residue)
    label = basins.get("residue_label")
    if label is None and isinstance(basins.get("residue"), int) and 0 <= basins["residue"] < len(labels):
        label = labels[basins["residue"]]
    if label not in per_residue:
        raise PitaInputError(f"{path}: residue_label: {label!r} is not a residue of the samples "
                             f"({', '.join(labels) or 'none'})")
    sample = per_residue[label]
    out: dict[str, Any] = {"file": path, "method": basins.get("method"), "residue": label}
    worst = []
    for name in M.BASIN_NAMES[1:]:
        ref = basins["basins"][name]
        dF = sample.get(f"dF_{name}")
        se = sample.get(f"dF_{name}_se", values.get(f"dF_{name}_se") if len(per_residue) == 1 else None)
        diff = None if dF is None or not math.isfinite(dF) else float(dF) - float(ref["dF"])
        diff_se = None if diff is None or se is None else math.hypot(float(se), float(ref["se"]))
        out[f"dF_{name}"] = dF
        out[f"dF_{name}_ref"] = float(ref["dF"])
        out[f"dF_{name}_ref_se"] = float(ref["se"])
        out[f"dF_{name}_diff"] = diff
        out[f"dF_{name}_diff_se"] = diff_se
        finite_se = diff_se is not None and math.isfinite(diff_se) and diff_se > 0
        out[f"dF_{name}_z"] = diff / diff_se if diff is not None and finite_se else None
        worst.append(abs(diff) if diff is not None else math.inf)
    out["dF_diff_max_abs"] = max(worst)
    return out


# ----------------------------------------------------------------------------------- plots
def _write_plots_atomically(data: dict, pdir: Path, **kw: Any) -> list[str]:
    """write_plots into a temporary folder inside `pdir`, then each file moved into place: a plot
    that fails leaves none of the set behind (nor `pdir`, where this call made it)."""
    import shutil
    import tempfile

    made = not pdir.exists()
    pdir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".plots-", dir=pdir))
    try:
        names = write_plots(data, tmp, **kw)
        for name in names:
            os.replace(tmp / name, pdir / name)
        return names
    except BaseException:
        if made:
            shutil.rmtree(pdir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _figure(**kw: Any) -> Any:
    # no pyplot: no global backend state, renders with Agg
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _hist_weights(w: np.ndarray | None, n: int) -> np.ndarray:
    return M.normalize_weights(w, n)


def ramachandran_plot_name(residue: str | None = None) -> str:
    """ramachandran.png for a molecule with one (phi, psi) pair, ramachandran_<residue>.png per
    residue when there are several (ramachandran_ALA2.png, ramachandran_ALA3.png)."""
    if residue is None:
        return PLOT_FILES["ramachandran"]
    return f"ramachandran_{re.sub(r'[^A-Za-z0-9_-]', '_', residue)}.png"


def _ramachandran_figure(ang_s: np.ndarray, ang_r: np.ndarray, ws, wr, title: str, stats: dict) -> Any:
    """One residue: samples and reference free-energy surfaces -ln p(phi, psi) side by side."""
    fig = _figure(figsize=(8.6, 3.9))
    fig.subplots_adjust(left=0.08, right=0.88, bottom=0.13, top=0.8, wspace=0.3)
    edges = np.linspace(-180, 180, M.RAMA_BINS + 1)
    hs = M.ramachandran_histogram(ang_s, ws)
    hr = M.ramachandran_histogram(ang_r, wr)
    with np.errstate(divide="ignore"):
        fs, fr = -np.log(hs), -np.log(hr)
    finite = np.concatenate([fs[np.isfinite(fs)], fr[np.isfinite(fr)]])
    vmin = finite.min() if finite.size else 0.0
    axes = []
    for c, (f, name) in enumerate(((fs, "samples"), (fr, "reference"))):
        ax = fig.add_subplot(1, 2, c + 1)
        im = ax.pcolormesh(edges, edges, (f - vmin).T, cmap="viridis", vmin=0, vmax=10)
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_aspect("equal")
        ax.set_xlabel(r"$\phi$ (deg)")
        ax.set_ylabel(r"$\psi$ (deg)")
        ax.set_title(name)
        axes.append(ax)
    fig.colorbar(im, ax=axes, label="free energy (kT)", fraction=0.04, pad=0.03)
    parts = [f"{name} {stats[k]:.3g}" for k, name in (("rama_kl", "KL"), ("torus_w2", "torus W2"))
             if isinstance(stats.get(k), (int, float)) and math.isfinite(stats[k])]
    fig.suptitle(f"Ramachandran {title}" + (f"  ({', '.join(parts)})" if parts else ""))
    return fig


def free_energy_profile(angles: np.ndarray, w: np.ndarray | None, blocks: np.ndarray | None = None,
                        bins: int = PROFILE_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-D free energy F = -ln p (kT, minimum 0) of one angle (radians) on `bins` bins over
    [-pi, pi): (bin centres in degrees, F, block-jackknife error of F; nan without blocks or
    where a bin is empty)."""
    edges = np.linspace(-math.pi, math.pi, bins + 1)
    a = M.wrap_angle(angles)
    w = M.normalize_weights(w, a.size)
    which = np.clip(np.digitize(a, edges) - 1, 0, bins - 1)

    def f_of(ww: np.ndarray) -> np.ndarray:
        p = np.bincount(which, weights=ww, minlength=bins)
        with np.errstate(divide="ignore"):
            return -np.log(p / p.sum())

    f = f_of(w)
    shift = np.min(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
    err = np.full(bins, np.nan)
    if blocks is not None and np.unique(blocks).size > 1:
        ids = np.unique(blocks)
        reps = []
        for b in ids:
            wb = np.where(blocks == b, 0.0, w)
            reps.append(f_of(wb / wb.sum()) if wb.sum() > 0 else np.full(bins, np.inf))
        reps = np.asarray(reps)
        g = ids.size
        with np.errstate(invalid="ignore"):
            ok = np.all(np.isfinite(reps), axis=0)
            spread = np.sqrt((g - 1) / g * np.sum((reps - reps.mean(axis=0)) ** 2, axis=0))
        err = np.where(ok, spread, np.nan)
    centres = np.degrees(0.5 * (edges[:-1] + edges[1:]))
    return centres, f - shift, err


def _profiles_figure(data: dict, title_t: str) -> Any:
    """phi and psi free-energy profiles of every residue: samples against the reference, with the
    reference's block-jackknife error band (+-1 se)."""
    labels = data["residues"]
    fig = _figure(figsize=(8.6, 3.3 * len(labels)))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.12 / len(labels), top=1 - 0.1 / len(labels),
                        wspace=0.25, hspace=0.45)
    for r, lab in enumerate(labels):
        for c, name in enumerate((r"$\phi$", r"$\psi$")):
            ax = fig.add_subplot(len(labels), 2, 2 * r + c + 1)
            x, fr, er = free_energy_profile(data["ang_r"][:, r, c], data.get("wr"), data.get("ref_blocks"))
            _, fs, _ = free_energy_profile(data["ang_s"][:, r, c], data.get("ws"))
            ax.fill_between(x, fr - er, fr + er, color="C0", alpha=0.3, lw=0, label="reference +- 1 se (blocks)")
            ax.plot(x, fr, "-", color="C0", label="reference")
            ax.plot(x, fs, "o-", color="C1", ms=3, label="samples")
            ax.set_xlim(-180, 180)
            ax.set_xlabel(f"{name} (deg)")
            ax.set_ylabel("free energy (kT)")
            ax.set_title(f"{lab}{title_t}", fontsize=9)
            if r == 0 and c == 0:
                ax.legend(fontsize=7)
    return fig


def write_plots(data: dict, out_dir: str | Path, temperature: float | None = None, units: str | None = None
                ) -> list[str]:
    """PNG plots from `compute_metrics`' data; returns the file names written (relative to out_dir)."""
    out_dir = Path(out_dir)
    written: list[str] = []
    ws, wr = data.get("ws"), data.get("wr")
    reduced = units is not None and units != "kJ/mol,nm"  # Lennard-Jones: T in reduced units, no kelvin
    title_t = "" if temperature is None else (f" at T = {temperature:g}" if reduced else f" at {temperature:g} K")

    # energy histograms
    u_s, u_r = data["u_s"], data["u_r"]
    fig = _figure(figsize=(5.5, 4))
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.9)
    ax = fig.add_subplot()
    lo, hi = np.percentile(np.concatenate([u_s, u_r]), [0.5, 99.5])
    bins = np.linspace(lo, hi, 80)
    ax.hist(u_r, bins=bins, weights=_hist_weights(wr, len(u_r)), histtype="step", lw=1.5, label="reference",
            density=True)
    ax.hist(u_s, bins=bins, weights=_hist_weights(ws, len(u_s)), histtype="step", lw=1.5, label="samples",
            density=True)
    ax.set_xlabel("U / kT")
    ax.set_ylabel("density")
    ax.set_title("Energy" + title_t)
    ax.legend()
    _save(fig, out_dir / PLOT_FILES["energy"])
    written.append(PLOT_FILES["energy"])

    if "dist_s" in data:
        (ds, wds), (dr, wdr) = data["dist_s"], data["dist_r"]
        fig = _figure(figsize=(5.5, 4))
        fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.9)
        ax = fig.add_subplot()
        bins = np.linspace(0.0, max(ds.max(), dr.max()), 100)
        ax.hist(dr, bins=bins, weights=wdr, histtype="step", lw=1.5, density=True, label="reference")
        ax.hist(ds, bins=bins, weights=wds, histtype="step", lw=1.5, density=True, label="samples")
        ax.set_xlabel("interatomic distance")
        ax.set_ylabel("density")
        ax.set_title("Pairwise distances" + title_t)
        ax.legend()
        _save(fig, out_dir / PLOT_FILES["distances"])
        written.append(PLOT_FILES["distances"])

    if "ang_s" in data and data.get("residues"):
        labels = data["residues"]
        for r, lab in enumerate(labels):
            name = ramachandran_plot_name(lab if len(labels) > 1 else None)
            stats = (data.get("per_residue") or {}).get(lab, {})
            fig = _ramachandran_figure(data["ang_s"][:, r], data["ang_r"][:, r], ws, wr, lab + title_t, stats)
            _save(fig, out_dir / name)
            written.append(name)

    if "ang_s" in data and data.get("residues"):
        fig = _profiles_figure(data, title_t)
        _save(fig, out_dir / PLOT_FILES["profiles"])
        written.append(PLOT_FILES["profiles"])

    # a 2-D free-energy surface needs two TICs (a molecule of two or three atoms has fewer)
    if "tica_s" in data and np.ndim(data["tica_s"]) == 2 and np.shape(data["tica_s"])[1] >= 2:
        ps, pr = data["tica_s"], data["tica_r"]
        both = np.concatenate([ps, pr])
        lo, hi = np.percentile(both, [0.5, 99.5], axis=0)
        xe, ye = np.linspace(lo[0], hi[0], 60), np.linspace(lo[1], hi[1], 60)
        fig = _figure(figsize=(8.6, 3.6))
        fig.subplots_adjust(left=0.08, right=0.9, bottom=0.14, top=0.9, wspace=0.3)
        for c, (p, w, name) in enumerate(((ps, ws, "samples"), (pr, wr, "reference"))):
            ax = fig.add_subplot(1, 2, c + 1)
            h, _, _ = np.histogram2d(p[:, 0], p[:, 1], bins=[xe, ye], weights=_hist_weights(w, len(p)))
            with np.errstate(divide="ignore"):
                f = -np.log(h / h.sum())
            f -= np.min(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0
            im = ax.pcolormesh(xe, ye, f.T, cmap="viridis", vmin=0, vmax=10)
            ax.set_xlabel("TIC 1")
            ax.set_ylabel("TIC 2")
            ax.set_title(f"{name}{title_t}")
        fig.colorbar(im, ax=fig.axes, label="free energy (kT)", fraction=0.04, pad=0.03)
        _save(fig, out_dir / PLOT_FILES["tica"])
        written.append(PLOT_FILES["tica"])
    return written


__all__ = ["evaluate", "compute_metrics", "check_inputs", "write_plots", "ramachandran_plot_name", "METRICS_FILE"]
