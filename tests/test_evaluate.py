"""evaluate / report / export on small alanine-dipeptide MD sets made here with OpenMM."""
from __future__ import annotations

import csv
import math
import json
import types

import numpy as np
import pytest

from pita import KB_KJ_PER_MOL_K
from pita.errors import PitaInputError
from pita.evaluate import evaluate
from pita.report import write_report
from pita.samples import SampleSet
from pita.systems import DATA_DIR

ALDP_PDB = DATA_DIR / "alanine_dipeptide.pdb"
ALA3_PDB = DATA_DIR / "alanine_tripeptide.pdb"
HEADLINE = ("energy_w1", "energy_w2", "distance_w2", "rama_kl", "torus_w2", "tica_w2")
FAST = dict(ot_max_n=400, distance_max_n=400)


def _md(pdb, system, temperature, n_traj, n_frames, stride, seed, name="alanine_dipeptide", length_scale=0.164):
    """Short Langevin MD (Reference platform, 1 fs, HBonds) -> SampleSet with trajectory/time_ps."""
    import openmm
    import openmm.unit as u

    pos, energy, traj, time_ps = [], [], [], []
    for k in range(n_traj):
        integ = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, 1.0 / u.picosecond, 1.0 * u.femtosecond)
        integ.setRandomNumberSeed(seed + k)
        ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pdb.positions)
        ctx.setVelocitiesToTemperature(temperature * u.kelvin, seed + k)
        integ.step(300)
        for i in range(n_frames):
            integ.step(stride)
            st = ctx.getState(getPositions=True, getEnergy=True)
            pos.append(st.getPositions(asNumpy=True).value_in_unit(u.nanometer))
            energy.append(st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
            traj.append(k)
            time_ps.append((i + 1) * stride * 1e-3)
    n_evals = n_traj * (300 + n_frames * stride)
    attrs = {"system": name, "temperature": float(temperature), "units": "kJ/mol,nm",
             "length_scale": length_scale, "n_energy_evals": n_evals, "n_energy_evals_total": n_evals, "rung": 0,
             "producing_step": "test_md", "wall_time_s": 1.0}
    return SampleSet(np.asarray(pos, dtype=np.float32), np.asarray(energy), attrs,
                     trajectory=np.asarray(traj, dtype=np.int32), time_ps=np.asarray(time_ps))


@pytest.fixture(scope="module")
def aldp():
    """(system stand-in, ref 300 K, independent 300 K, 1200 K) — about 3 s of MD."""
    app = pytest.importorskip("openmm.app")
    import mdtraj as md
    import openmm.unit as u

    if not ALDP_PDB.exists():
        pytest.skip(f"{ALDP_PDB} missing")
    pdb = app.PDBFile(str(ALDP_PDB))
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    omm = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    # the evaluation needs only topology, kT, n_atoms and a reference structure
    system = types.SimpleNamespace(
        name="alanine_dipeptide", topology=md.Topology.from_openmm(pdb.topology), n_atoms=22,
        kT=lambda t: KB_KJ_PER_MOL_K * float(t),
        reference_positions=np.asarray(pdb.positions.value_in_unit(u.nanometer)))
    ref = _md(pdb, omm, 300.0, 4, 100, 25, seed=1)
    other = _md(pdb, omm, 300.0, 4, 100, 25, seed=101)
    hot = _md(pdb, omm, 1200.0, 4, 100, 25, seed=201)
    return system, ref, other, hot


@pytest.fixture(scope="module")
def ala3():
    """(system stand-in, ref 300 K, 1200 K relabelled as 300 K) for ACE-ALA-ALA-NME — about 3 s of MD."""
    app = pytest.importorskip("openmm.app")
    import mdtraj as md
    import openmm.unit as u

    if not ALA3_PDB.exists():
        pytest.skip(f"{ALA3_PDB} missing")
    pdb = app.PDBFile(str(ALA3_PDB))
    ff = app.ForceField("amber99sbildn.xml", "amber99_obc.xml")
    omm = ff.createSystem(pdb.topology, nonbondedMethod=app.NoCutoff, constraints=app.HBonds)
    system = types.SimpleNamespace(
        name="alanine_tripeptide", topology=md.Topology.from_openmm(pdb.topology), n_atoms=32,
        kT=lambda t: KB_KJ_PER_MOL_K * float(t),
        reference_positions=np.asarray(pdb.positions.value_in_unit(u.nanometer)))
    kw = dict(name="alanine_tripeptide", length_scale=0.2)
    ref = _md(pdb, omm, 300.0, 4, 100, 25, seed=1, **kw)
    hot = _md(pdb, omm, 1200.0, 4, 100, 25, seed=201, **kw)
    hot.attrs["temperature"] = 300.0  # 1200 K samples offered as 300 K ones: every residue is off
    return system, ref, hot


ALA3_RESIDUES = ["ALA2", "ALA3"]
RESIDUE_KEYS = ("rama_kl", "torus_w2", "p_C7eq", "p_alpha_R", "p_alpha_L", "dF_alpha_R", "dF_alpha_R_ref",
                "dF_alpha_R_ref_err", "dF_alpha_R_diff", "dF_alpha_L", "dF_alpha_L_ref", "dF_alpha_L_ref_err")


def test_tripeptide_every_residue_has_metrics_and_a_plot(ala3, tmp_path):
    system, ref, hot = ala3
    m = evaluate(hot, ref, system, tmp_path, samples_path="hot.h5", reference_path="ref.h5", **FAST)
    assert m["residues"] == ALA3_RESIDUES
    assert list(m["per_residue"]) == ALA3_RESIDUES
    for lab in ALA3_RESIDUES:
        res = m["per_residue"][lab]
        for k in RESIDUE_KEYS:
            assert k in res, (lab, k)
        assert res["torus_w2"] > 0.05 and res["rama_kl"] > 0.05, lab
        assert sum(res[f"p_{b}"] for b in ("C7eq", "alpha_R", "alpha_L")) == pytest.approx(1.0)
        # flat keys for summary.csv, residue before _ref/_ref_err/_diff
        for flat in (f"rama_kl_{lab}", f"torus_w2_{lab}", f"p_C7eq_{lab}", f"p_C7eq_{lab}_ref", f"dF_alpha_R_{lab}",
                     f"dF_alpha_R_{lab}_ref", f"dF_alpha_R_{lab}_ref_err", f"dF_alpha_R_{lab}_diff"):
            assert flat in m, flat
        assert m[f"torus_w2_{lab}"] == res["torus_w2"]
        assert m[f"rama_kl_{lab}"] == res["rama_kl"]
    # summaries over residues
    kls = [m["per_residue"][lab]["rama_kl"] for lab in ALA3_RESIDUES]
    assert m["rama_kl"] == pytest.approx(np.mean(kls)) and m["rama_kl_max"] == pytest.approx(max(kls))
    assert m["torus_w2_max_residue"] == max(m["per_residue"][lab]["torus_w2"] for lab in ALA3_RESIDUES)
    assert m["torus_w2"] >= m["torus_w2_max_residue"] * 0.9  # joint torus: all four angles
    assert m["dF_diff_max_abs"] is None or m["dF_diff_max_abs"] >= 0
    assert m["n_chiral_centers"] == 2 and m["chirality_wrong_fraction"] == 0.0
    # one Ramachandran plot per residue, no combined one
    plots = set(m["plots"])
    assert {"ramachandran_ALA2.png", "ramachandran_ALA3.png"} <= plots
    assert "ramachandran.png" not in plots
    for p in plots:
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert list(on_disk["per_residue"]) == ALA3_RESIDUES
    # the report shows both residues: a per-residue table row and a plot each
    write_report([tmp_path / "metrics.json"], tmp_path / "report.html", tmp_path / "summary.csv")
    html = (tmp_path / "report.html").read_text()
    assert "Ramachandran per residue" in html
    for lab in ALA3_RESIDUES:
        assert f"<td>{lab}</td>" in html and f'alt="ramachandran_{lab}.png"' in html
    assert html.count("data:image/png;base64,") == len(plots)
    with open(tmp_path / "summary.csv") as fh:
        row = next(csv.DictReader(fh))
    for lab in ALA3_RESIDUES:
        assert float(row[f"torus_w2_{lab}"]) > 0 and float(row[f"p_C7eq_{lab}_ref"]) > 0
    assert "per_residue" not in row


def test_tripeptide_self_evaluation_is_zero_per_residue(ala3):
    system, ref, _ = ala3
    m = evaluate(ref, ref, system, None, **FAST)
    assert m["residues"] == ALA3_RESIDUES
    for lab in ALA3_RESIDUES:
        assert m["per_residue"][lab]["torus_w2"] == pytest.approx(0.0, abs=1e-6)
        assert m["per_residue"][lab]["rama_kl"] == pytest.approx(0.0, abs=1e-9)
    assert m["torus_w2"] == pytest.approx(0.0, abs=1e-6)


def test_tripeptide_one_wrong_centre_counts(ala3):
    """Two chiral centres: a sample with only ALA3 inverted (CB <-> HA swapped) is wrong, too."""
    system, ref, _ = ala3
    top = system.topology
    res3 = [r for r in top.residues if str(r) == "ALA3"][0]
    cb = [a.index for a in res3.atoms if a.name == "CB"][0]
    ha = [a.index for a in res3.atoms if a.name == "HA"][0]
    x = ref.positions.copy()
    x[::2, [cb, ha]] = x[::2, [ha, cb]]
    s = SampleSet(x, ref.energy, dict(ref.attrs))
    m = evaluate(s, ref, system, None, **FAST)
    assert m["n_chiral_centers"] == 2
    assert m["chirality_wrong_fraction"] == pytest.approx(0.5)
    whole = SampleSet(-ref.positions, ref.energy, dict(ref.attrs))  # both centres mirrored
    assert evaluate(whole, ref, system, None, **FAST)["chirality_wrong_fraction"] == 1.0


def test_self_evaluation_is_near_zero(aldp, tmp_path):
    system, ref, _, _ = aldp
    m = evaluate(ref, ref, system, tmp_path, samples_path="ref.h5", reference_path="ref.h5", **FAST)
    for k in HEADLINE:
        assert m[k] == pytest.approx(0.0, abs=1e-6), k
    assert m["chirality_wrong_fraction"] == 0.0
    assert m["ess"] == pytest.approx(len(ref))
    assert m["n_energy_evals"] == ref.attrs["n_energy_evals"]
    assert m["n_energy_evals_total"] == ref.attrs["n_energy_evals_total"]
    assert m["method"] == "pita" and m["temperature"] == 300.0 and m["rung"] == 0
    assert m["wall_time_s"] == 1.0 and m["eval_wall_time_s"] > 0
    assert m["residues"] == ["ALA2"] and list(m["per_residue"]) == ["ALA2"]
    assert m["per_residue"]["ALA2"]["torus_w2"] == m["torus_w2"]
    assert m["per_residue"]["ALA2"]["rama_kl"] == m["rama_kl"]
    assert m["dF_alpha_R_diff"] in (None, pytest.approx(0.0, abs=1e-12))
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["energy_w2"] == m["energy_w2"]
    assert set(on_disk["plots"]) == {"energy.png", "distances.png", "ramachandran.png", "tica.png",
                                     "free_energy_profiles.png"}
    for p in on_disk["plots"]:
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*"))  # no temporaries left behind


def test_wrong_temperature_is_clearly_worse(aldp, tmp_path):
    system, ref, other, hot = aldp
    good = evaluate(other, ref, system, None, **FAST)
    hot300 = hot.subset(np.arange(len(hot)))
    hot300.attrs["temperature"] = 300.0  # pretend: 1200 K samples offered as 300 K ones
    bad = evaluate(hot300, ref, system, tmp_path / "hot", plots=False, **FAST)
    assert (tmp_path / "hot" / "metrics.json").exists()
    assert bad["energy_w1"] > 10 * good["energy_w1"]
    assert bad["energy_w1"] > 20.0  # kT: 1200 K vs 300 K
    assert bad["energy_w2"] > 10 * good["energy_w2"]
    assert bad["distance_w2"] > good["distance_w2"]
    assert bad["torus_w2"] > good["torus_w2"]
    assert bad["tica_w2"] > good["tica_w2"]


def test_temperature_mismatch_names_the_file(aldp):
    system, ref, _, hot = aldp
    with pytest.raises(PitaInputError, match="ref_300K.h5.*1200"):
        evaluate(hot, ref, system, None, samples_path="hot.h5", reference_path="ref_300K.h5")


def test_weighted_set_is_evaluated_by_its_weights(aldp):
    system, ref, other, hot = aldp
    mix = SampleSet(np.concatenate([other.positions, hot.positions]), np.concatenate([other.energy, hot.energy]),
                    dict(other.attrs),
                    log_weight=np.concatenate([np.zeros(len(other)), np.full(len(hot), -np.inf)]))
    m_mix = evaluate(mix, ref, system, None, **FAST)
    m_other = evaluate(other, ref, system, None, **FAST)
    assert m_mix["weighted"] and not m_other["weighted"]
    assert m_mix["ess"] == pytest.approx(len(other))
    assert m_mix["energy_w1"] == pytest.approx(m_other["energy_w1"], rel=1e-9)
    assert m_mix["rama_kl"] == pytest.approx(m_other["rama_kl"], rel=1e-9)
    assert m_mix["torus_w2"] == pytest.approx(m_other["torus_w2"], rel=0.2)


def test_mirrored_samples_are_counted(aldp):
    system, ref, other, _ = aldp
    x = other.positions.copy()
    x[::4] *= -1.0
    mirrored = SampleSet(x, other.energy, dict(other.attrs))
    m = evaluate(mirrored, ref, system, None, **FAST)
    assert m["chirality_wrong_fraction"] == pytest.approx(0.25)
    assert m["energy_w1"] == pytest.approx(evaluate(other, ref, system, None, **FAST)["energy_w1"])


def test_lj_like_particles_without_topology(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 13, 3)).astype(np.float32)
    attrs = {"system": "lj13", "temperature": 1.0, "units": "reduced", "length_scale": 1.0,
             "n_energy_evals": 10, "n_energy_evals_total": 20}
    a = SampleSet(x, rng.normal(size=300), attrs)
    b = SampleSet(1.1 * x, rng.normal(1.0, 1.0, size=300), dict(attrs))
    m = evaluate(b, a, None, tmp_path)
    assert m["distance_w2"] > 0.05 and m["energy_w1"] > 0.5
    for k in ("rama_kl", "torus_w2", "tica_w2", "chirality_wrong_fraction"):
        assert k not in m
    assert set(m["plots"]) == {"energy.png", "distances.png"}
    assert evaluate(a, a, None, None)["distance_w2"] == pytest.approx(0.0, abs=1e-9)


def test_lj_energy_and_distance_w2_follow_the_pita_convention(tmp_path):
    """LJ-13 headline metrics as in the PITA code (energytemp_module: energy W2 =
    sqrt(ot.emd2_1d) of the reduced energies U/kT, dist_w2 = sqrt(ot.emd2_1d) of all pooled
    interatomic distances i < j), on the real LJ-13 energy, at T = 2 so that kT matters."""
    import ot
    import torch

    from pita.systems import load

    lj = load("lj13")
    rng = np.random.default_rng(1)
    x = rng.normal(scale=0.7, size=(400, 13, 3))
    a_x, b_x = x[:200], 1.05 * x[200:]
    sets = []
    for pos in (a_x, b_x):
        e = lj.energy(torch.as_tensor(pos)).numpy()
        sets.append(SampleSet(pos.astype(np.float32), e, {"system": "lj13", "temperature": 2.0, "units": "reduced",
                                                         "length_scale": 1.0, "n_energy_evals": 0,
                                                         "n_energy_evals_total": 0}))
    s, r = sets
    m = evaluate(s, r, lj, tmp_path)
    assert m["energy_w2"] == pytest.approx(np.sqrt(ot.emd2_1d(r.energy / 2.0, s.energy / 2.0)), rel=1e-6)
    iu = np.triu_indices(13, k=1)

    def dists(p):
        p = p.astype(np.float64)
        return np.linalg.norm(p[:, iu[0]] - p[:, iu[1]], axis=-1).reshape(-1)

    assert m["distance_w2"] == pytest.approx(np.sqrt(ot.emd2_1d(dists(s.positions), dists(r.positions))), rel=1e-6)
    assert m["energy_mean"] == pytest.approx(np.mean(s.energy) / 2.0)
    assert set(m["plots"]) == {"energy.png", "distances.png"}
    on_disk = json.loads((tmp_path / "metrics.json").read_text())
    assert on_disk["energy_w2"] == m["energy_w2"] and on_disk["distance_w2"] == m["distance_w2"]


def test_report_on_two_rungs(aldp, tmp_path):
    system, ref, other, hot = aldp
    paths = []
    for rung, s in enumerate((other, ref)):
        s = s.subset(np.arange(len(s)))
        s.attrs["rung"] = rung
        evaluate(s, ref, system, tmp_path / f"rung_{rung}", plots=rung == 0, **FAST)
        paths.append(tmp_path / f"rung_{rung}" / "metrics.json")
    # a baseline tagged by method
    base = json.loads(paths[0].read_text())
    base.update(method="md", plots=[])
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "metrics.json").write_text(json.dumps(base))
    write_report(paths, tmp_path / "report.html", tmp_path / "summary.csv")
    with open(tmp_path / "summary.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2
    assert [r["rung"] for r in rows] == ["0", "1"]
    assert rows[0]["method"] == "pita" and float(rows[0]["temperature"]) == 300.0
    assert float(rows[1]["energy_w2"]) == 0.0 and float(rows[0]["energy_w2"]) > 0
    assert int(rows[0]["n_energy_evals_total"]) == other.attrs["n_energy_evals_total"]
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table" in html  # 4 plots + the 1-D profiles
    assert "src=\"http" not in html and "href=" not in html  # self-contained
    write_report(paths + [tmp_path / "md" / "metrics.json"], tmp_path / "r2.html", tmp_path / "s2.csv")
    html2 = (tmp_path / "r2.html").read_text()
    assert "Methods compared" in html2 and ">md<" in html2
    with open(tmp_path / "s2.csv") as fh:
        assert [r["method"] for r in csv.DictReader(fh)] == ["pita", "pita", "md"]


def test_cli_report_and_export(aldp, tmp_path):
    import mdtraj as md

    from pita.cli import main
    from pita.commands import export

    system, ref, other, _ = aldp
    evaluate(other, ref, system, tmp_path / "rung_0", plots=False, **FAST)
    assert main(["report", "--metrics", str(tmp_path / "rung_0" / "metrics.json"), "--out",
                 str(tmp_path / "r.html"), "--summary", str(tmp_path / "s.csv")]) == 0
    assert (tmp_path / "r.html").exists() and (tmp_path / "s.csv").exists()
    assert main(["report", "--metrics", str(tmp_path / "nope.json"), "--out", str(tmp_path / "x.html")]) == 2
    # export: the topology comes from the system, stubbed here to avoid building the force field
    w = other.subset(np.arange(len(other)))
    w.log_weight = np.where(np.arange(len(w)) < 10, 0.0, -np.inf)
    w.write(tmp_path / "w.h5")
    orig = export._topology
    export._topology = lambda args, samples: system.topology
    try:
        assert main(["export", "--samples", str(tmp_path / "w.h5"), "--out", str(tmp_path / "w.dcd"),
                     "--resample", "20"]) == 0
        assert main(["export", "--samples", str(tmp_path / "w.h5"), "--out", str(tmp_path / "w.pdb"),
                     "--max-frames", "5"]) == 0
    finally:
        export._topology = orig
    t = md.load(str(tmp_path / "w.dcd"), top=str(tmp_path / "w.pdb"))
    assert t.n_frames == 20 and t.n_atoms == 22
    picked = {int(np.argmin(np.abs(other.positions - f).sum(axis=(1, 2)))) for f in t.xyz}
    assert picked <= set(range(10))
    t5 = md.load(str(tmp_path / "w.pdb"))
    assert t5.n_frames == 5
    # particles without topology (LJ)
    lj = SampleSet(np.random.default_rng(0).normal(size=(7, 13, 3)).astype(np.float32), np.zeros(7),
                   {"system": "lj13", "temperature": 1.0, "units": "reduced", "length_scale": 1.0,
                    "n_energy_evals": 0, "n_energy_evals_total": 0})
    lj.write(tmp_path / "lj.h5")
    assert main(["export", "--samples", str(tmp_path / "lj.h5"), "--out", str(tmp_path / "lj.pdb")]) == 0
    assert md.load(str(tmp_path / "lj.pdb")).n_frames == 7


def test_cli_evaluate_with_the_real_system(aldp, tmp_path):
    pytest.importorskip("pita.systems.molecule")
    from pita.cli import main

    _, ref, other, hot = aldp
    ref.write(tmp_path / "ref.h5")
    other.write(tmp_path / "s.h5")
    hot.write(tmp_path / "hot.h5")
    assert main(["evaluate", "--samples", str(tmp_path / "s.h5"), "--reference", str(tmp_path / "ref.h5"),
                 "--system", "alanine_dipeptide", "--out", str(tmp_path / "ev"), "--seed", "3", "--no-plots",
                 "--max-samples", "300"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["seed"] == 3 and m["samples"].endswith("s.h5") and m["torus_w2"] > 0
    assert main(["evaluate", "--samples", str(tmp_path / "hot.h5"), "--reference", str(tmp_path / "ref.h5"),
                 "--system", "alanine_dipeptide", "--out", str(tmp_path / "ev2")]) == 2


def test_ess_traces_figure_plots_the_fraction_it_is_given(tmp_path, monkeypatch):
    """anneal_diagnostics.json's ess_trace is already ESS/N: the figure plots it as is (it divided by the
    particle count, putting every trace near 1/N)."""
    import json

    from pita import report

    diag = tmp_path / "rung_1" / "anneal_diagnostics.json"
    diag.parent.mkdir()
    trace = [1.0, 0.8, 0.45, 0.97, 0.6]
    diag.write_text(json.dumps({"ess_trace": trace, "resample_steps": [2], "ess_final_fraction": 0.3,
                                "settings": {"n_particles": 2000}}))
    figs = []
    monkeypatch.setattr(report, "_save_png", lambda fig, path: figs.append(fig))
    report.ess_traces_figure([diag], tmp_path / "ess.png")
    line, marker = figs[0].axes[0].lines[:2]
    assert list(line.get_ydata()) == trace and list(marker.get_ydata()) == [0.45]


def test_report_sets_each_anneal_above_its_relaxed_set(tmp_path):
    """Rows of method pita_annealed (rule evaluate_annealed) are paired with the relaxed set of the
    same rung in "Before and after relaxation", annealed first; a rung without one is left out, and
    without any annealed row the section is absent."""
    from pita.report import write_report

    common = {"system": "alanine_dipeptide", "units": "kJ/mol,nm", "plots": []}
    rows = {
        "r0": {"method": "pita", "rung": 0, "temperature": 1200.0, "dF_alpha_L": 1.11},
        "r1": {"method": "pita", "rung": 1, "temperature": 300.0, "dF_alpha_L": 3.25, "n_energy_evals_total": 9000},
        "a1": {"method": "pita_annealed", "rung": 1, "temperature": 300.0, "dF_alpha_L": 14.75, "weighted": True,
               "n_energy_evals_total": 4000},
        # the no-model baseline's two sets at the target follow PITA's pair: bridged, then relaxed
        "s1": {"method": "smc", "rung": 1, "temperature": 300.0, "dF_alpha_L": 3.375, "n_energy_evals_total": 8999},
        "b1": {"method": "smc_bridged", "rung": 1, "temperature": 300.0, "dF_alpha_L": 2.625,
               "n_energy_evals_total": 5000},
        "m1": {"method": "md", "rung": 1, "temperature": 300.0, "dF_alpha_L": 7.125, "n_energy_evals_total": 8999},
    }
    paths = []
    for name, m in rows.items():
        (tmp_path / f"{name}.json").write_text(json.dumps({**common, **m}))
        paths.append(tmp_path / f"{name}.json")
    write_report(paths, tmp_path / "report.html", tmp_path / "summary.csv")
    page = (tmp_path / "report.html").read_text()
    start = page.index("<h2>Before and after relaxation</h2>")
    table = page[start:page.index("</table>", start)]
    assert table.index("<td>14.75</td>") < table.index("<td>3.25</td>") and "1.11" not in table
    assert table.index("<td>pita_annealed</td>") < table.index("<td>pita</td>") < table.index("<td>smc_bridged</td>") \
        < table.index("<td>smc</td>")
    assert table.index("<td>14.75</td>") < table.index("<td>3.25</td>") < table.index("<td>2.625</td>") \
        < table.index("<td>3.375</td>") and "7.125" not in table  # plain MD has no pre-relaxation set
    with open(tmp_path / "summary.csv") as fh:
        assert sorted(r["method"] for r in csv.DictReader(fh)) == ["md", "pita", "pita", "pita_annealed", "smc",
                                                                  "smc_bridged"]
    write_report(paths[:2], tmp_path / "plain.html")
    assert "Before and after relaxation" not in (tmp_path / "plain.html").read_text()


def _plot_data(n_tics: int) -> dict:
    rng = np.random.default_rng(0)
    return {"u_s": rng.normal(size=200), "u_r": rng.normal(size=200), "ws": None, "wr": None,
            "tica_s": rng.normal(size=(200, n_tics)), "tica_r": rng.normal(size=(200, n_tics))}


def test_plots_of_a_molecule_with_one_tic(tmp_path):
    """Two atoms have one interatomic distance, so TICA has one component: no 2-D surface (it used
    to raise IndexError after writing the energy plot), the other plots as usual."""
    from pita.evaluate import PLOT_FILES, write_plots

    assert write_plots(_plot_data(1), tmp_path) == [PLOT_FILES["energy"]]
    assert PLOT_FILES["tica"] in write_plots(_plot_data(2), tmp_path / "two")


def test_plots_are_all_or_nothing(tmp_path, monkeypatch):
    """A plot that fails leaves no plot of the set behind, nor the folder made for them."""
    from pita import evaluate as E

    def broken(*a, **k):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(E, "_hist_weights", broken, raising=True)
    pdir = tmp_path / "plots"
    with pytest.raises(RuntimeError, match="renderer broke"):
        E._write_plots_atomically(_plot_data(2), pdir)
    assert not pdir.exists()
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "other.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        E._write_plots_atomically(_plot_data(2), tmp_path / "kept")
    assert [p.name for p in (tmp_path / "kept").iterdir()] == ["other.txt"]
    monkeypatch.undo()
    E._write_plots_atomically(_plot_data(2), pdir)
    assert {p.name for p in pdir.iterdir()} == {E.PLOT_FILES["energy"], E.PLOT_FILES["tica"]}


@pytest.mark.parametrize("metrics, fragment", [
    ({}, "'temperature' must be a positive number, got None"),
    ({"rung": "x", "temperature": 300.0}, "'rung' must be an integer, got 'x'"),
    ({"temperature": "hot"}, "'temperature' must be a positive number, got 'hot'"),
    ({"temperature": 300.0, "energy_w1": "bad"}, "'energy_w1' must be a number or null, got 'bad'"),
    ({"temperature": 300.0, "method": ["pita"]}, "'method' must be a name, got ['pita']"),
])
def test_report_refuses_metrics_of_the_wrong_type(tmp_path, metrics, fragment):
    bad = tmp_path / "m.json"
    bad.write_text(json.dumps(metrics))
    with pytest.raises(PitaInputError) as exc:
        write_report([bad], tmp_path / "r.html", tmp_path / "s.csv")
    assert str(exc.value) == f"{bad}: {fragment}"
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "s.csv").exists()


def _basin_json(path, **over):
    data = {"method": "umbrella sampling along phi + MBAR", "system": "alanine_dipeptide", "temperature": 300.0,
            "residue": 0, "residue_label": "ALA2",
            "basins": {"C7eq": {"p": 0.58, "dF": 0.0, "se": 0.0},
                       "alpha_R": {"p": 0.40, "dF": 0.35, "se": 0.04},
                       "alpha_L": {"p": 0.02, "dF": 3.3, "se": 0.05}}}
    data.update(over)
    path.write_text(json.dumps(data))
    return path


def test_cli_evaluate_against_a_basin_reference(aldp, tmp_path):
    """--basin-reference: each basin's difference from the precise values, its se in quadrature, the
    report's table and summary.csv columns; a reference at another temperature, of another system or
    residue is refused (exit 2, no metrics written)."""
    pytest.importorskip("pita.systems.molecule")
    from pita.cli import main

    _, ref, other, _ = aldp
    ref.write(tmp_path / "ref.h5")
    other.write(tmp_path / "s.h5")
    good = _basin_json(tmp_path / "basins.json")
    base = ["evaluate", "--samples", str(tmp_path / "s.h5"), "--reference", str(tmp_path / "ref.h5"),
            "--system", "alanine_dipeptide", "--no-plots", "--max-samples", "300", "--bootstrap-replicates", "20"]
    assert main(base + ["--out", str(tmp_path / "ev"), "--basin-reference", str(good)]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    br = m["basin_reference"]
    assert br["residue"] == "ALA2" and br["file"] == str(good)
    assert br["dF_alpha_R"] == pytest.approx(m["dF_alpha_R"])
    assert br["dF_alpha_R_diff"] == pytest.approx(m["dF_alpha_R"] - 0.35)
    assert br["dF_alpha_R_diff_se"] == pytest.approx(math.hypot(m["dF_alpha_R_se"], 0.04))
    assert br["dF_alpha_R_z"] == pytest.approx(br["dF_alpha_R_diff"] / br["dF_alpha_R_diff_se"])
    # 400 frames of 300 K MD rarely reach alpha_L: an empty basin has no difference, and counts as the worst
    if m["dF_alpha_L"] is None:
        assert br["dF_alpha_L_diff"] is None and br["dF_diff_max_abs"] is None
    from pita.report import write_report

    html_path, csv_path = tmp_path / "r.html", tmp_path / "s.csv"
    write_report([tmp_path / "ev" / "metrics.json"], html_path, csv_path)
    assert "umbrella-sampling reference" in html_path.read_text()
    assert "basin_reference_dF_alpha_R_diff" in csv_path.read_text().splitlines()[0]
    for i, over in enumerate(({"temperature": 310.0}, {"system": "alanine_tripeptide"},
                              {"residue_label": "ALA3"}, {"basins": {"alpha_R": {"dF": 1.0}}})):
        bad = _basin_json(tmp_path / f"bad{i}.json", **over)
        out = tmp_path / f"bad_ev{i}"
        assert main(base + ["--out", str(out), "--basin-reference", str(bad)]) == 2, over
        assert not (out / "metrics.json").exists()
