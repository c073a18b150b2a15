"""Fidelity diagnostics: the numbers that say whether the model carries the result."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pita.fidelity import energy_fidelity, score_consistency, summary_scalars
from pita.samples import SampleSet
from pita.steps import reweighting_ess_fraction
from pita.systems import load
from pita.systems.gmm import AnalyticDiffusionModel, GaussianMixture


def test_reweighting_ess_matches_the_closed_form():
    """Energies U ~ N(0, s^2) reweighted by exp(-d U): ESS/N = exp(-d^2 s^2) for Gaussian U."""
    gmm = load("gmm")
    rng = np.random.default_rng(0)
    s = 2.0
    n = 400_000
    u = rng.normal(0.0, s, n)
    ss = SampleSet(positions=np.zeros((n, gmm.dim), np.float32), energy=u,
                   attrs=dict(system="gmm", temperature=1.0, units="reduced", length_scale=1.0, n_energy_evals=0,
                              n_energy_evals_total=0))
    T_next = 1.0 / 1.3  # d = 1/T_next - 1/T = 0.3 (kB = 1)
    got = reweighting_ess_fraction(ss, gmm, T_next)
    assert got == pytest.approx(math.exp(-(0.3 * s) ** 2), rel=0.02)
    # the same temperature: nothing to reweight
    assert reweighting_ess_fraction(ss, gmm, 1.0) == pytest.approx(1.0)


class _Exact:
    """An analytic model in the PitaModel interface: E = -log p_sigma, s = -grad E."""

    def __init__(self, gmm, consistent=True):
        self.m, self.consistent = AnalyticDiffusionModel(gmm), consistent
        self.config = {"sigma_min": 0.01, "sigma_max": 5.0, "temperature": 1.0, "n_atoms": None, "mean_free": False}
        self.device = torch.device("cpu")

    def energy(self, x, sigma):
        return self.m.energy(x.double(), torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0]))

    def score(self, x, sigma):
        s = self.m.score(x.double(), torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0]))
        return s if self.consistent else 1.5 * s

    def energy_score(self, x, sigma):
        return self.m.score(x.double(), torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0]))


def test_exact_model_scores_perfectly_and_a_wrong_one_does_not():
    gmm = GaussianMixture()
    x = torch.as_tensor(gmm.sample(2000, generator=torch.Generator().manual_seed(0)), dtype=torch.float64) \
        if hasattr(gmm, "sample") else torch.randn(2000, gmm.dim, dtype=torch.float64)
    u = -gmm.log_prob(x)
    fid = energy_fidelity(_Exact(gmm), x, u, gamma=2.0)
    assert fid["residual_sd"] < 1e-3 and fid["log_weight_sd"] < 2e-3 and fid["r2"] > 0.999
    good = score_consistency(_Exact(gmm), x, None, per_band=64)
    bad = score_consistency(_Exact(gmm, consistent=False), x, None, per_band=64)
    assert max(b["median_ratio"] for b in good) < 1e-6
    assert min(b["median_ratio"] for b in bad) == pytest.approx(1 / 3, rel=1e-6)  # |1.5 s - s| / |1.5 s|


def test_summary_scalars_flattens_both_files():
    anneal = {"ess_final": 300.0, "ess_path": 1000.0, "n_particles_out": 2000, "ess_reweight_previous_fraction": 0.02,
              "n_ancestors": 2, "ess_ancestors": 1.4}
    fid = {"fidelity": {"energy": {"r2": 0.9, "residual_sd": 1.2, "log_weight_sd": 1.8},
                        "score_energy_consistency": [{"sigma_lo": 0.01, "median_ratio": 0.1},
                                                     {"sigma_lo": 0.3, "median_ratio": 0.2},
                                                     {"sigma_lo": 3.0, "median_ratio": 0.4}],
                        "generated": {"bond_rms_error_pm": 12.0, "bond_rms_data_pm": 5.7,
                                      "median_energy_minus_data_kT": 80.0, "wrong_chirality_fraction": 0.5}}}
    out = {**summary_scalars(anneal), **summary_scalars(fid)}
    assert out["ess_final_fraction"] == 0.15 and out["ess_path_fraction"] == 0.5
    assert out["ess_reweight_previous_fraction"] == 0.02 and out["model_log_weight_sd"] == 1.8
    assert out["n_ancestors"] == 2 and out["ess_ancestors"] == 1.4
    assert out["model_score_energy_gap_lt_0.1"] == 0.1 and out["model_score_energy_gap_gt_1"] == 0.4
    assert out["model_bond_rms_error_pm"] == 12.0 and out["model_generated_wrong_chirality"] == 0.5
    assert not any(k.startswith("relax_") for k in out)
    relax = {"ess_in": 192.0, "accept_rate": 0.57, "torsion_moves": 1600, "torsion_accept_rate": 0.34}
    assert summary_scalars(relax) == {"relax_accept": 0.57, "relax_torsion_accept": 0.34}
    # MALA only: no torsion acceptance to report
    assert summary_scalars({**relax, "torsion_moves": 0}) == {"relax_accept": 0.57}
    # Langevin with torsion moves: no MALA acceptance, the torsion acceptance still reported
    assert summary_scalars({"ess_in": 192.0, "torsion_moves": 4, "torsion_accept_rate": 0.3}) == {
        "relax_torsion_accept": 0.3}


def test_report_shows_the_model_table_and_ess_figure(tmp_path):
    import json

    from pita.report import write_report

    paths = []
    for rung, (final, rew) in enumerate([(0.17, 0.014), (0.098, 0.149)], start=1):
        m = {"rung": rung, "method": "pita", "temperature": 700.0 - 100 * rung, "energy_w1": 0.1,
             "ess_path_fraction": 0.6, "ess_final_fraction": final, "ess_reweight_previous_fraction": rew,
             "model_log_weight_sd": 1.8, "model_energy_r2": 0.95, "n_ancestors": 3 - rung}
        p = tmp_path / f"rung_{rung}" / "metrics.json"
        p.parent.mkdir()
        p.write_text(json.dumps(m))
        paths.append(p)
    write_report(paths, out_html=tmp_path / "r.html", summary_csv=tmp_path / "s.csv")
    html = (tmp_path / "r.html").read_text()
    assert "Does the model carry the result?" in html and 'alt="ess per rung"' in html
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert "ess_reweight_previous_fraction" in header and "n_ancestors" in header and "<th>n_ancestors</th>" in html


class _EnergyOnly:
    """heat_equation_residual's view of a model: energy_model(x, sigma), config, device."""

    def __init__(self, gmm, warp=1.0):
        self.energy_model = lambda x, sigma: gmm.diffused_energy(x, 0.01 + warp * (sigma - 0.01))
        self.config = {"sigma_max": 5.0}
        self.device = torch.device("cpu")


def test_heat_equation_residual_vanishes_for_the_exact_diffused_energy():
    """-log p_sigma of a Gaussian mixture solves the heat equation: the spread of tau r over x is zero in
    every band (up to round-off); with sigma warped 3-fold (not a solution) it is not."""
    from pita.fidelity import heat_equation_residual

    gmm = GaussianMixture()
    x = gmm.sample(500, generator=torch.Generator().manual_seed(0)).double()
    exact = heat_equation_residual(_EnergyOnly(gmm), x, None, per_band=64)
    warped = heat_equation_residual(_EnergyOnly(gmm, warp=3.0), x, None, per_band=64)
    assert len(exact) == 6 and max(b["sd_tau_r"] for b in exact) < 1e-8, exact  # the last band is cut at sigma_max
    assert min(b["sd_tau_r"] for b in warped) > 1e-3, warped
    assert max(b["robust_sd_tau_r"] for b in exact) < 1e-8 and min(b["robust_sd_tau_r"] for b in warped) > 1e-4


def test_heat_residual_robust_spread_sees_the_bulk_past_rare_outliers():
    """Exact diffused energy plus a narrow bump that only a few noised samples reach: the sd is carried by
    those few, the robust spread stays at the exact solution's zero, and the tail fraction counts them."""
    from pita.fidelity import heat_equation_residual, summary_scalars

    gmm = GaussianMixture()
    x = gmm.sample(500, generator=torch.Generator().manual_seed(0)).double()
    far = x.norm(dim=-1).quantile(0.97)  # ~3 % of the data (and of its noised copies) lie beyond it

    class Bumped(_EnergyOnly):
        def __init__(self):
            super().__init__(gmm)
            exact = self.energy_model
            self.energy_model = lambda x, sigma: exact(x, sigma) + 50.0 * torch.relu(x.norm(dim=-1) - far) ** 3

    bands = heat_equation_residual(Bumped(), x, None, per_band=256, keep_frames=True)
    low = [b for b in bands if b["sigma"] < 0.1]
    for b in low:  # the kept frames are the tail's: the outliers are the frames beyond the bump's onset
        dev = (b["tau_r"] - b["tau_r"].median()).abs()
        outside = b["x"].norm(dim=-1) > far
        assert b["x"].shape == (256, x.shape[1]) and bool((dev[~outside] < 1e-8).all()) and bool(outside.any())
    assert all(b["sd_tau_r"] > 1e-3 for b in low), low
    assert all(b["robust_sd_tau_r"] < 1e-8 for b in low), low
    assert all(0.0 < b["tail_fraction"] < 0.1 for b in low), low
    out = summary_scalars({"fidelity": {"heat_equation_residual": [{k: v for k, v in b.items() if k not in ("x", "tau_r")}
                                                                    for b in bands]}})
    assert out["model_heat_residual_robust_lt_0.1"] < 1e-8 < out["model_heat_residual_lt_0.1"]


def test_generation_that_diverges_is_reported_not_raised():
    """A model whose every generated particle becomes NaN (a fidelity finding) must not fail training."""
    from pita.fidelity import generated_quality

    gmm = GaussianMixture()

    class Diverging(_Exact):
        def energy(self, x, sigma):
            return super().energy(x, sigma) * float("nan")

    model = Diverging(gmm)
    model.dim, model.mean_free, model.n_atoms = gmm.dim, False, None
    model.sigma_min, model.sigma_max = 0.01, 5.0
    out = generated_quality(model, gmm, np.zeros((4, gmm.dim)), np.zeros(4), 1.0, n_samples=16, n_steps=5)
    assert out["n_finite"] == 0 and out["path_ess_fraction"] == 0.0 and "NaN" in out["failed"]
