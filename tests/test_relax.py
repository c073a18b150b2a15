"""Relaxation (MALA, Langevin), the resample-move bridge, and the anneal/relax command line."""
from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from pita.relax import model_potential, relax
from pita.samples import SampleSet
from pita.systems.gmm import GaussianMixture




def _set(x, energy=None, log_weight=None, total=0, temperature=1.0, extra=None):
    x = np.asarray(x)
    return SampleSet(positions=x.astype(np.float32), energy=np.zeros(len(x)) if energy is None else np.asarray(energy),
                     log_weight=log_weight,
                     attrs=dict(system="gmm", temperature=temperature, units="reduced", length_scale=1.0,
                                n_energy_evals=0, n_energy_evals_total=total, rung=1),
                     extra=extra or {})


COV = np.array([[1.0, 0.3], [0.3, 0.5]])
MEAN = np.array([1.0, -1.0])


def test_mala_moments_and_eval_count():
    g = GaussianMixture(means=[MEAN.tolist()], covs=[COV.tolist()], weights=[1.0])
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2000, 2, generator=gen, dtype=torch.float64) * 0.3  # deliberately wrong start
    for T in (1.0, 0.5):
        r = relax(_set(x0.numpy(), total=10, temperature=T), g, T, method="mala", n_steps=200, seed=1)
        x = r.samples.positions.astype(np.float64)
        assert np.allclose(x.mean(0), MEAN, atol=0.08)
        assert np.allclose(np.cov(x.T), T * COV, atol=0.08 * T)
        assert 0.4 < r.diagnostics["accept_rate"] < 0.75
        # one energy evaluation per particle at the start, then one per proposal
        assert r.samples.attrs["n_energy_evals"] == 2000 * 201
        assert r.samples.attrs["n_energy_evals_total"] == 10 + 2000 * 201
        assert r.samples.forces is not None and r.samples.log_weight is None
        r.samples.validate()


def test_langevin_moments():
    g = GaussianMixture(means=[MEAN.tolist()], covs=[COV.tolist()], weights=[1.0])
    x0 = torch.as_tensor(np.tile(MEAN, (2000, 1)))
    r = relax(_set(x0.numpy()), g, 1.0, method="langevin", n_steps=300, step_size=0.05, friction=2.0, seed=2)
    x = r.samples.positions.astype(np.float64)
    assert np.allclose(x.mean(0), MEAN, atol=0.08)
    assert np.allclose(np.cov(x.T), COV, atol=0.1)


class Broad:
    """A deliberately poor 'model': E = |x|^2 / (2 * 3^2), the density pi_0 the bridge starts from."""

    def energy(self, x, sigma):
        return 0.5 * (x**2).sum(-1) / 9.0


def test_bridge_fixes_a_degenerate_weighted_set():
    target = GaussianMixture(means=[[-2.0, 0.0], [2.0, 1.0]], stds=[0.3, 0.5], weights=[0.3, 0.7])
    gen = torch.Generator().manual_seed(0)
    n = 1500
    x0 = torch.randn(n, 2, generator=gen, dtype=torch.float64) * 3.0  # exact samples of pi_0
    phi0 = 0.5 * (x0**2).sum(-1) / 9.0
    U = target.energy(x0)
    lw = (-U + phi0).numpy()  # log pi/pi_0: right in expectation but nearly degenerate
    s = _set(x0.numpy(), energy=U.numpy(), log_weight=lw)
    assert s.ess() / n < 0.1
    pf = model_potential(Broad(), 1.0, 0.01, 1.0, None)
    exact_mean = np.array([0.3 * -2 + 0.7 * 2, 0.7])
    plain = relax(s, target, 1.0, n_steps=0, bridge_mode="never", phi0_fn=pf, seed=3)
    br = relax(s, target, 1.0, n_steps=0, bridge_mode="auto", bridge_ess_threshold=0.1, phi0_fn=pf, seed=3)
    assert br.diagnostics["bridge"] and not plain.diagnostics["bridge"]
    assert br.diagnostics["bridge_lambdas"][-1] == 1.0 and br.diagnostics["bridge_levels"] >= 2
    xb = br.samples.positions.astype(np.float64)
    assert abs((xb[:, 0] < 0).mean() - 0.3) < 0.05
    assert np.allclose(xb.mean(0), exact_mean, atol=0.2)
    # the bridge rejuvenates: many distinct particles, unlike plain resampling of degenerate weights
    assert br.diagnostics["n_unique_after_resampling"] > 3 * plain.diagnostics["n_unique_after_resampling"]
    assert br.samples.attrs["n_energy_evals"] > plain.samples.attrs["n_energy_evals"]


def test_bridge_always_needs_model():
    g = GaussianMixture()
    with pytest.raises(ValueError):
        relax(_set(np.zeros((10, 2))), g, 1.0, n_steps=0, bridge_mode="always")


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def _tiny_checkpoint(path, **cfg):
    from pita.models import PitaModel, save_checkpoint

    torch.manual_seed(0)
    model = PitaModel({"sd": 1.0, "sigma_min": 0.01, "backbone_options": {"hidden": 32, "layers": 2, "embedding": 16},
                       **cfg})
    save_checkpoint(path, model)
    return model


def test_cli_anneal_relax_gmm(tmp_path):
    pytest.importorskip("pita.models")
    from pita.cli import main

    ckpt = tmp_path / "model.pt"
    _tiny_checkpoint(ckpt, dim=2, n_atoms=None, temperature=2.0, sigma_max=10.0, system={"name": "gmm"})
    g = GaussianMixture()
    seed_set = _set(g.sample(50, torch.Generator().manual_seed(0)).numpy(), total=777, temperature=2.0)
    seed_set.attrs["rung"] = 0
    seed_set.write(tmp_path / "rung0.h5")
    rc = main(["anneal", "--checkpoint", str(ckpt), "--system", "gmm", "--temperature", "1.0", "--samples-in",
               str(tmp_path / "rung0.h5"), "--out", str(tmp_path / "w.h5"), "--diagnostics", str(tmp_path / "d.json"),
               "--n-particles", "64", "--n-steps", "20", "--resample-threshold", "0.5", "--forces", "--seed", "1"])
    assert rc == 0
    w = SampleSet.read(tmp_path / "w.h5", temperature=1.0)
    assert w.log_weight is not None and w.forces is not None and len(w) == 64
    assert w.attrs["n_energy_evals"] == 64 and w.attrs["n_energy_evals_total"] == 777 + 64
    assert w.attrs["rung"] == 1 and w.attrs["gamma"] == pytest.approx(2.0)
    assert len(w.extra["ess_trace"]) == 20
    diag = json.loads((tmp_path / "d.json").read_text())
    assert diag["n_energy_evals"] == 64 and "resample_steps" in diag and "ess_final" in diag
    # every particle's initial ancestor, and the lineage counts, in the set and the diagnostics
    anc = np.asarray(w.extra["ancestor"])
    assert anc.shape == (64,) and 0 <= anc.min() and anc.max() < 64
    assert w.attrs["n_ancestors"] == diag["n_ancestors"] == len(np.unique(anc))
    assert 1.0 <= diag["ess_ancestors"] <= diag["n_ancestors"]
    rc = main(["relax", "--samples", str(tmp_path / "w.h5"), "--system", "gmm", "--temperature", "1.0",
               "--out", str(tmp_path / "r.h5"), "--n-steps", "10", "--bridge", "always", "--checkpoint", str(ckpt),
               "--diagnostics", str(tmp_path / "rd.json")])
    assert rc == 0
    r = SampleSet.read(tmp_path / "r.h5", temperature=1.0)
    assert r.log_weight is None and r.forces is not None and len(r) == 64
    assert r.attrs["producing_step"] == "relax"
    assert r.attrs["n_energy_evals_total"] == 777 + 64 + r.attrs["n_energy_evals"]
    # a mismatched source temperature is a one-line input error
    rc = main(["anneal", "--checkpoint", str(ckpt), "--system", "gmm", "--temperature", "1.0", "--samples-in",
               str(tmp_path / "w.h5"), "--out", str(tmp_path / "x.h5"), "--n-particles", "8", "--n-steps", "2"])
    assert rc == 2


_HAVE_MOLECULE = importlib.util.find_spec("pita.systems.molecule") is not None


@pytest.mark.skipif(not _HAVE_MOLECULE, reason="needs pita.systems.molecule (ALDP force field in torch), not there yet")
def test_cli_aldp_rung_produces_valid_sets(tmp_path):
    """A short ALDP rung with an untrained model: checks plumbing (shapes, chirality, counts), not quality."""
    pytest.importorskip("openmm")
    from pita import KB_KJ_PER_MOL_K
    from pita.cli import main

    ckpt = tmp_path / "aldp.pt"
    _tiny_checkpoint(ckpt, dim=66, n_atoms=22, temperature=600.0, sigma_max=17.0, length_scale=0.164,
                     units="kJ/mol,nm", kB=KB_KJ_PER_MOL_K, system={"name": "alanine_dipeptide"})
    rc = main(["anneal", "--checkpoint", str(ckpt), "--system", "alanine_dipeptide", "--temperature", "450",
               "--out", str(tmp_path / "w.h5"), "--diagnostics", str(tmp_path / "d.json"), "--n-particles", "32",
               "--n-steps", "8", "--divergence", "hutchinson", "--rung", "1"])
    assert rc == 0
    w = SampleSet.read(tmp_path / "w.h5", temperature=450.0, n_atoms=22)
    diag = json.loads((tmp_path / "d.json").read_text())
    # mirrored particles stay (in the data's enantiomer), mixed ones are dropped: all accounted for
    assert diag["n_dropped_chirality"] + diag["n_dropped_nonfinite"] + len(w) == 32
    assert diag["n_mirrored"] <= len(w)
    from pita.chirality import ChiralityChecker
    from pita.systems import load

    assert ChiralityChecker.from_system(load("alanine_dipeptide")).wrong_fraction(w.positions) == 0.0
    # the tempering path through the CLI: gamma 1 down the noise levels, then levels up to 600 / 450
    rc = main(["anneal", "--checkpoint", str(ckpt), "--system", "alanine_dipeptide", "--temperature", "450",
               "--out", str(tmp_path / "wt.h5"), "--diagnostics", str(tmp_path / "dt.json"), "--n-particles", "32",
               "--n-steps", "8", "--weights", "ais", "--mala-steps", "1", "--gamma-path", "temper_at_sigma_min",
               "--temper-mala-steps", "2", "--rung", "1"])
    assert rc == 0
    dt = json.loads((tmp_path / "dt.json").read_text())["settings"]
    assert dt["gamma_path"] == "temper_at_sigma_min" and dt["temper_gammas"][-1] == pytest.approx(600.0 / 450.0)
    rc = main(["relax", "--samples", str(tmp_path / "w.h5"), "--system", "alanine_dipeptide", "--temperature", "450",
               "--out", str(tmp_path / "r.h5"), "--n-steps", "4", "--bridge", "never"])
    assert rc == 0
    r = SampleSet.read(tmp_path / "r.h5", temperature=450.0, n_atoms=22)
    assert r.attrs["n_energy_evals_total"] == w.attrs["n_energy_evals_total"] + r.attrs["n_energy_evals"]


def test_relax_records_the_lineage_of_every_output_sample():
    """Resampling copies a lineage, moves keep it: with the weight on particles 3 and 7 only, every
    output sample descends from one of them (by the given labels, or the input index by default),
    and the labels survive writing and subsetting."""
    g = GaussianMixture(means=[MEAN.tolist()], covs=[COV.tolist()], weights=[1.0])
    n = 50
    x0 = np.tile(MEAN, (n, 1)) + 0.1 * np.random.default_rng(0).normal(size=(n, 2))
    lw = np.full(n, -np.inf)
    lw[[3, 7]] = 0.0
    r = relax(_set(x0, log_weight=lw), g, 1.0, n_steps=20, n_out=200, seed=4)
    anc = r.samples.lineage()
    assert set(np.unique(anc)) == {3, 7} and r.diagnostics["n_lineages"] == 2
    assert r.diagnostics["ess_lineages"] == pytest.approx(2.0, rel=0.05)
    labels = np.arange(n) + 100
    r2 = relax(_set(x0, log_weight=lw), g, 1.0, n_steps=20, n_out=200, seed=4, lineage=labels)
    assert set(np.unique(r2.samples.lineage())) == {103, 107}
    sub = r2.samples.subset(np.arange(10))
    assert np.array_equal(sub.lineage(), r2.samples.lineage()[:10])
    with pytest.raises(ValueError, match="lineage"):
        relax(_set(x0, log_weight=lw), g, 1.0, n_steps=1, lineage=labels[:5])


@pytest.mark.parametrize("method,torsion_moves,n_out", [("mala", 3, 7), ("langevin", 2, None), ("mala", 0, 5)])
def test_relax_spends_exactly_the_planned_evaluations(method, torsion_moves, n_out):
    """The baselines' planned budget (pita budget) counts a relaxation as n_out (1 + n_steps +
    torsion moves): the real count, with torsion moves on a molecule, for both move kinds."""
    from pita.relax import planned_evaluations, torsion_cycles
    from pita.systems import load

    aldp = load("alanine_dipeptide")
    rng = np.random.default_rng(0)
    x = np.asarray(aldp.reference_positions)[None] + 0.001 * rng.standard_normal((6, aldp.n_atoms, 3))
    ss = SampleSet(positions=x.astype(np.float32), energy=np.zeros(6),
                   attrs=dict(system=aldp.name, temperature=300.0, units=aldp.units, length_scale=aldp.length_scale,
                              n_energy_evals=0, n_energy_evals_total=0, rung=1))
    r = relax(ss, aldp, 300.0, method=method, n_steps=4, n_out=n_out, torsion_moves=torsion_moves, bridge_mode="never",
              step_size=1e-6 if method == "mala" else 0.0005, seed=3)
    assert torsion_cycles(aldp, torsion_moves) == torsion_moves
    assert r.samples.attrs["n_energy_evals"] == planned_evaluations(n_out or 6, 4, torsion_moves)
    assert r.samples.attrs["n_energy_evals"] == (n_out or 6) * (1 + 4 + torsion_moves)


def test_torsion_cycles_only_where_a_bond_rotates():
    from pita.relax import torsion_cycles
    from pita.systems import load

    assert torsion_cycles(load("lj13"), 400) == 0
    assert torsion_cycles(GaussianMixture(means=[[0.0, 0.0]], covs=[np.eye(2).tolist()], weights=[1.0]), 400) == 0
    assert torsion_cycles(load("alanine_dipeptide"), 0) == 0
    assert torsion_cycles(load("alanine_dipeptide"), 400) == 400
