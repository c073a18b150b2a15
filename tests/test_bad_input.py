"""Bad input through the real command line: one-line errors, exit status 2, no partial output.

Every case runs `pita.cli.main([...])` in-process (a few also through the `pita` console script
in a subprocess) against an output folder that already holds an earlier rung's result, and checks:

* the exit status is 2 (input error),
* stderr is exactly one line, "pita <command>: error: ...", naming the file or field and the problem,
* nothing was written: the --out path and any diagnostics/losses path do not exist, and the
  output folder holds exactly what it held before (no temporary files, no work folders),
* the earlier rung's file in that folder is byte-for-byte unchanged.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch

from pita.cli import main
from pita.samples import SampleSet

T_RUNG1 = 755.95  # the second rung of config.yaml's ladder
T_TARGET = 300.0
N = 12




# ---------------------------------------------------------------------------------------------
# tiny inputs, built once
# ---------------------------------------------------------------------------------------------
def _aldp_set(system, temperature: float, n: int = N, seed: int = 0, rung: int = 1) -> SampleSet:
    """Reference structure plus small noise, with the system's energies and forces."""
    rng = np.random.default_rng(seed)
    x = np.asarray(system.reference_positions, dtype=np.float64)[None] + 0.002 * rng.standard_normal((n, system.n_atoms, 3))
    energy, forces = system.energy_and_forces(torch.as_tensor(x))
    return SampleSet(positions=x.astype(np.float32), energy=energy.double().numpy(), forces=forces.float().numpy(),
                     attrs=dict(system=system.name, temperature=temperature, units=system.units,
                                length_scale=system.length_scale, n_energy_evals=n, n_energy_evals_total=1000 + n,
                                rung=rung, producing_step="test"))


def _raw_h5(path: Path, attrs: dict, **datasets) -> None:
    """Write an HDF5 file directly (SampleSet.write would refuse these)."""
    with h5py.File(path, "w") as fh:
        for name, arr in datasets.items():
            fh.create_dataset(name, data=arr)
        for k, v in attrs.items():
            fh.attrs[k] = v


@pytest.fixture(scope="module")
def inp(tmp_path_factory) -> dict[str, Path]:
    from pita import KB_KJ_PER_MOL_K
    from pita.models import PitaModel, save_checkpoint
    from pita.systems import load

    d = tmp_path_factory.mktemp("inputs")
    aldp = load("alanine_dipeptide", backend="openmm")  # energies of the fixtures: OpenMM is the reference
    good = _aldp_set(aldp, T_RUNG1)
    p = {"d": d}
    p["good"] = good.write(d / "rung1.h5")
    p["ref300"] = _aldp_set(aldp, T_TARGET, seed=1, rung=3).write(d / "reference_T300.h5")
    attrs = {k: v for k, v in good.attrs.items()}
    p["no_energy"] = d / "no_energy.h5"
    _raw_h5(p["no_energy"], attrs, positions=good.positions)
    p["wrong_shape"] = d / "wrong_shape.h5"
    _raw_h5(p["wrong_shape"], attrs, positions=good.positions[:, :, :2], energy=good.energy)
    p["nan"] = d / "nan.h5"
    pos = good.positions.copy()
    pos[3, 5, 1] = np.nan
    _raw_h5(p["nan"], attrs, positions=pos, energy=good.energy)
    ten = SampleSet(positions=good.positions[:, :10].copy(), energy=good.energy.copy(), attrs=dict(attrs))
    p["ten_atoms"] = ten.write(d / "ten_atoms.h5")
    hot = dict(attrs, temperature=1200.0, rung=0)  # the checkpoint's temperature: passes the temperature check
    p["nan_hot"] = d / "nan_T1200.h5"
    _raw_h5(p["nan_hot"], hot, positions=pos, energy=good.energy)
    p["bad_total"] = d / "bad_total_T1200.h5"
    _raw_h5(p["bad_total"], dict(hot, n_energy_evals_total="many"), positions=good.positions, energy=good.energy)
    p["not_h5"] = d / "text.h5"
    p["not_h5"].write_text("positions,energy\n1,2\n")
    p["garbage_pt"] = d / "garbage.pt"
    p["garbage_pt"].write_bytes(b"this is not a checkpoint\x00\x01\x02" * 10)
    p["bad_pdb"] = d / "bad.pdb"
    p["bad_pdb"].write_text("REMARK broken\nATOM      1  N   ALA A   1     not-a-number  0.000   0.000  1.00  0.00           N\nEND\n")
    p["empty_pdb"] = d / "empty.pdb"
    p["empty_pdb"].write_text("REMARK nothing here\nEND\n")
    p["ckpt"] = d / "rung0.pt"
    torch.manual_seed(0)
    model = PitaModel({"dim": 66, "n_atoms": 22, "temperature": 1200.0, "sd": 1.0, "sigma_min": 0.01,
                       "sigma_max": 17.0, "length_scale": 0.164, "units": "kJ/mol,nm", "kB": KB_KJ_PER_MOL_K,
                       "system": {"name": "alanine_dipeptide"},
                       "backbone_options": {"hidden": 16, "layers": 2, "embedding": 8}})
    save_checkpoint(p["ckpt"], model)
    # hostile files (issue: tracebacks instead of one line)
    p["group_positions"] = d / "group_positions.h5"
    with h5py.File(p["group_positions"], "w") as fh:
        fh.create_group("positions")
        fh.create_dataset("energy", data=good.energy)
        for k, v in attrs.items():
            fh.attrs[k] = v
    p["extra_dataset"] = d / "extra_dataset.h5"
    _raw_h5(p["extra_dataset"], attrs, positions=good.positions, energy=good.energy, extra=np.zeros(3))
    p["sparse_huge"] = d / "sparse_huge.h5"  # declares 2e8 x 22 x 3 floats (53 GB) in a file of a few kB
    with h5py.File(p["sparse_huge"], "w") as fh:
        fh.create_dataset("positions", shape=(200_000_000, 22, 3), dtype="f4")
        fh.create_dataset("energy", shape=(200_000_000,), dtype="f8")
        for k, v in attrs.items():
            fh.attrs[k] = v
    lj = load("lj13")
    xl = np.asarray(lj.sample_initial(N) if hasattr(lj, "sample_initial") else
                    np.random.default_rng(0).normal(size=(N, 13, 3)), dtype=np.float64)
    p["lj_set"] = SampleSet(positions=xl.astype(np.float32), energy=np.zeros(N),
                            attrs=dict(system="lj13", temperature=T_RUNG1, units="reduced", length_scale=1.0,
                                       n_energy_evals=N, n_energy_evals_total=N, rung=1)).write(d / "lj13.h5")
    p["wrong_units"] = d / "wrong_units.h5"
    _raw_h5(p["wrong_units"], dict(attrs, units="reduced"), positions=good.positions, energy=good.energy)
    p["nan_ckpt"] = d / "nan_weights.pt"
    bad_model = PitaModel(dict(model.config))
    with torch.no_grad():
        next(iter(bad_model.parameters())).fill_(float("nan"))
    save_checkpoint(p["nan_ckpt"], bad_model)
    # `pita budget` plans (the baselines' --budget-from .json)
    plan = {"kind": "pita_budget_plan", "system": "alanine_dipeptide", "temperature": T_RUNG1,
            "n_energy_evals_total": 100_000}
    for key, patch in (("plan_other_temperature", {"temperature": T_TARGET}), ("plan_other_system", {"system": "lj13"}),
                       ("plan_not_a_plan", {"kind": "metrics"}), ("plan_bad_total", {"n_energy_evals_total": 1.5e5}),
                       ("plan_other_ladder", {"temperatures": [1500.0, T_RUNG1]}),
                       ("plan_huge_total", {"n_energy_evals_total": 10**15})):
        p[key] = d / f"{key}.json"
        p[key].write_text(json.dumps({**plan, **patch}))
    p["metrics"] = d / "metrics.json"
    p["metrics"].write_text('{"method": "pita", "rung": 1, "temperature": 755.95, "energy_w1": 0.5}\n')
    p["a_file"] = d / "a_file.txt"
    p["a_file"].write_text("not a folder\n")
    return p


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    #: argv builder: (inputs, out_dir) -> argv; the output is always out_dir / "out.h5" (or "eval" for evaluate)
    argv: Callable[[dict, Path], list[str]]
    #: substrings the one error line must contain (the file or field, and the problem)
    expect: list[str | Callable[[dict], str]]
    #: folders created in out_dir beforehand (e.g. where an output file should go)
    folders: list[str] = field(default_factory=list)


def _f(key: str) -> Callable[[dict], str]:
    """The name of an input file, for `expect`."""
    return lambda p: str(p[key])


def _relax(p, o, samples="good", *more, temperature=T_RUNG1, system="alanine_dipeptide"):
    return ["relax", "--samples", str(p[samples] if samples in p else samples), "--system", system,
            "--temperature", str(temperature), "--out", str(o / "out.h5"), "--diagnostics", str(o / "diag.json"),
            "--n-steps", "2", "--bridge", "never", *more]


def _anneal(p, o, *more, ckpt="ckpt", temperature=T_RUNG1, samples_in=None, system="alanine_dipeptide"):
    return ["anneal", "--checkpoint", str(p[ckpt] if ckpt in p else ckpt), "--system", system,
            "--temperature", str(temperature), "--out", str(o / "out.h5"), "--diagnostics", str(o / "diag.json"),
            "--n-particles", "4", "--n-steps", "2", "--device", "cpu",
            *([] if samples_in is None else ["--samples-in", str(p[samples_in] if samples_in in p else samples_in)]),
            *more]


def _train(p, o, *more, samples="good", system="alanine_dipeptide"):
    return ["train", "--samples", str(p[samples] if samples in p else samples), "--system", system,
            "--out", str(o / "out.pt"), "--losses-csv", str(o / "losses.csv"), "--steps", "2", "--batch-size", "4",
            "--device", "cpu", "--no-progress", *more]


def _md(p, o, *more, system="lj13"):
    return ["md", "--system", system, "--temperature", "1.0", "--n-samples", "4", "--out", str(o / "out.h5"),
            "--engine", "torch", "--device", "cpu", "--equilibration-steps", "2", "--stride-steps", "2", *more]


def _baseline(p, o, *more, method="replica_exchange", temperatures=("1200", "755.95")):
    return ["baseline", "--method", method, "--system", "alanine_dipeptide", "--temperatures", *temperatures,
            "--n-samples", "4", "--replicas-per-temperature", "2", "--out", str(o / "out.h5"), "--device", "cpu", "--no-progress",
            *more]


def _budget(p, o, *more, temperatures=("755.95", "555.52", "300"), out="out.json"):
    return ["budget", "--system", "alanine_dipeptide", "--temperatures", *temperatures, "--seed-set", str(p["good"]),
            "--out", str(o / out), *more]


def _evaluate(p, o, samples="good", reference="ref300", *more):
    return ["evaluate", "--samples", str(p[samples] if samples in p else samples),
            "--reference", str(p[reference] if reference in p else reference), "--system", "alanine_dipeptide",
            "--out", str(o / "eval"), "--no-plots", *more]


def _export(p, o, out="out.pdb", *more, samples="good"):
    return ["export", "--samples", str(p[samples]), "--out", str(o / out), *more]


def _pdb_spec(pdb: str) -> str:
    return '{"pdb": "%s", "forcefield": ["amber99sbildn.xml", "amber99_obc.xml"]}' % pdb


CASES = [
    # --- sample sets ---------------------------------------------------------------------------
    Case("relax-missing-energy-dataset", lambda p, o: _relax(p, o, "no_energy"),
         [_f("no_energy"), "dataset 'energy' is missing"]),
    Case("relax-wrong-shape", lambda p, o: _relax(p, o, "wrong_shape"),
         [_f("wrong_shape"), "'positions' must have shape"]),
    Case("relax-nan-positions", lambda p, o: _relax(p, o, "nan"),
         [_f("nan"), "'positions' has 1 sample(s) with NaN"]),
    Case("relax-not-hdf5", lambda p, o: _relax(p, o, "not_h5"), [_f("not_h5"), "not a readable HDF5 file"]),
    Case("relax-missing-file", lambda p, o: _relax(p, o, str(o / "nope.h5")), ["nope.h5", "file not found"]),
    Case("relax-temperature-not-the-sets", lambda p, o: _relax(p, o, temperature=300),
         [_f("good"), "'temperature' is 755.95 but 300 was expected"]),
    Case("relax-atom-count", lambda p, o: _relax(p, o, "ten_atoms"),
         [_f("ten_atoms"), "has 10 atoms but --system 'alanine_dipeptide' has 22"]),
    Case("relax-negative-steps", lambda p, o: _relax(p, o, "good", "--n-steps", "-1"), ["--n-steps", ">= 0"]),
    Case("relax-negative-temperature", lambda p, o: _relax(p, o, temperature=-5), ["--temperature", "positive"]),
    Case("evaluate-temperatures-differ", lambda p, o: _evaluate(p, o),
         [_f("ref300"), "reference temperature 300 differs", "755.95"]),
    Case("evaluate-missing-reference", lambda p, o: _evaluate(p, o, "good", str(o / "ref.h5")),
         ["ref.h5", "file not found"]),
    Case("train-atom-count", lambda p, o: _train(p, o, samples="ten_atoms"),
         [_f("ten_atoms"), "has 10 atoms but --system 'alanine_dipeptide' has 22"]),
    Case("train-nan-positions", lambda p, o: _train(p, o, samples="nan"), [_f("nan"), "NaN"]),
    # --- systems -------------------------------------------------------------------------------
    Case("train-unknown-system", lambda p, o: _train(p, o, system="alanine_heptapeptide"),
         ["alanine_heptapeptide", "unknown system"]),
    Case("relax-missing-pdb", lambda p, o: _relax(p, o, system=_pdb_spec(str(o / "missing.pdb"))),
         ["missing.pdb", "PDB file not found"]),
    Case("train-malformed-pdb", lambda p, o: _train(p, o, system=_pdb_spec(str(p["bad_pdb"]))),
         [_f("bad_pdb"), "cannot read PDB file"]),
    Case("anneal-pdb-without-atoms", lambda p, o: _anneal(p, o, system=_pdb_spec(str(p["empty_pdb"]))),
         [_f("empty_pdb"), "no atoms"]),
    Case("md-system-json-malformed", lambda p, o: _md(p, o, system='{"pdb": '), ["--system", "not valid JSON"]),
    # keys of a molecule spec are checked before anything runs (they used to give tracebacks or fail
    # after the MD); a path into a folder that does not exist is not replaced by a shipped PDB
    Case("md-spec-length-scale-text", lambda p, o: _md(p, o, system=_pdb_spec("alanine_dipeptide.pdb")[:-1]
                                                       + ', "length_scale": "abc"}'),
         ["system.length_scale", "positive finite number", "'abc'"]),
    Case("md-spec-length-scale-overflow", lambda p, o: _md(p, o, system=_pdb_spec("alanine_dipeptide.pdb")[:-1]
                                                           + ', "length_scale": 1e400}'),
         ["system.length_scale", "positive finite number"]),
    Case("md-spec-chunk-size-text", lambda p, o: _md(p, o, system=_pdb_spec("alanine_dipeptide.pdb")[:-1]
                                                     + ', "chunk_size": "x"}'), ["system.chunk_size", "positive integer"]),
    Case("md-spec-device", lambda p, o: _md(p, o, system=_pdb_spec("alanine_dipeptide.pdb")[:-1] + ', "device": "tpu"}'),
         ["system.device", "not a torch device"]),
    Case("md-spec-name-list", lambda p, o: _md(p, o, system=_pdb_spec("alanine_dipeptide.pdb")[:-1] + ', "name": [1]}'),
         ["system.name", "non-empty printable string"]),
    Case("md-spec-pdb-in-a-missing-folder", lambda p, o: _md(p, o, system=_pdb_spec("typo_dir/alanine_dipeptide.pdb")),
         ["typo_dir/alanine_dipeptide.pdb", "PDB file not found"]),
    Case("md-lj-length-scale-overflow", lambda p, o: _md(p, o, system='{"name": "lj13", "length_scale": ' + "1" * 400
                                                         + "}"), ["system.length_scale", "positive finite number"]),
    Case("train-config-json-huge-int", lambda p, o: _train(p, o, "--config-json", '{"lr": ' + "1" * 400 + "}"),
         ["lr", "must be a finite number"]),
    Case("train-config-json-nested-too-deep", lambda p, o: _train(p, o, "--config-json",
                                                                   '{"a": ' + "[" * 100000 + "]" * 100000 + "}"),
         ["--config-json", "nested too deeply"]),
    # --- counts --------------------------------------------------------------------------------
    Case("md-negative-n-samples", lambda p, o: _md(p, o, "--n-samples", "-5"), ["--n-samples", ">= 1", "-5"]),
    Case("md-zero-replicas", lambda p, o: _md(p, o, "--replicas", "0"), ["replicas", ">= 1"]),
    Case("anneal-zero-particles", lambda p, o: _anneal(p, o, "--n-particles", "0"), ["--n-particles", ">= 1"]),
    Case("anneal-negative-temperature", lambda p, o: _anneal(p, o, temperature=-300), ["--temperature", "positive"]),
    Case("train-negative-steps", lambda p, o: _train(p, o, "--steps", "-1"), ["--steps", ">= 1"]),
    Case("train-zero-threads", lambda p, o: _train(p, o, "--threads", "0"), ["--threads", "must be in [1, 1024]"]),
    Case("anneal-zero-probes", lambda p, o: _anneal(p, o, "--divergence", "hutchinson", "--probes", "0"),
         ["--probes", ">= 1"]),
    Case("anneal-bad-schedule", lambda p, o: _anneal(p, o, "--sigma-min", "1.0", "--sigma-max", "0.5"), ["sigma_min", "below sigma_max"]),
    Case("anneal-hmc-without-moves", lambda p, o: _anneal(p, o, "--weights", "discrete", "--leapfrog-steps", "4"),
         ["leapfrog_steps", "HMC moves need weights 'ais'"]),
    Case("relax-negative-n-out", lambda p, o: _relax(p, o, "good", "--n-out", "-3"), ["--n-out", ">= 1"]),
    Case("relax-negative-step-size", lambda p, o: _relax(p, o, "good", "--step-size", "-1"), ["--step-size", "> 0"]),
    Case("relax-negative-friction", lambda p, o: _relax(p, o, "good", "--method", "langevin", "--friction-per-ps", "-1"),
         ["--friction-per-ps", ">= 0"]),
    Case("evaluate-zero-ot-samples", lambda p, o: _evaluate(p, o, "good", "good", "--max-samples", "0"),
         ["--max-samples", ">= 10"]),
    Case("evaluate-zero-blocks", lambda p, o: _evaluate(p, o, "good", "good", "--blocks", "0"), ["--blocks", ">= 2"]),
    Case("export-negative-max-frames", lambda p, o: _export(p, o, "out.pdb", "--max-frames", "-1"),
         ["--max-frames", ">= 1"]),
    # --- output paths ----------------------------------------------------------------------------
    Case("anneal-diagnostics-is-a-folder", lambda p, o: _anneal(p, o), ["--diagnostics", "diag.json", "is a folder"],
         folders=["diag.json"]),
    Case("relax-out-is-a-folder", lambda p, o: _relax(p, o), ["--out", "out.h5", "is a folder"], folders=["out.h5"]),
    Case("train-losses-csv-is-a-folder", lambda p, o: _train(p, o), ["--losses-csv", "losses.csv", "is a folder"],
         folders=["losses.csv"]),
    Case("export-unknown-format", lambda p, o: _export(p, o, "out.foo"), ["out.foo", "unknown trajectory format '.foo'"]),
    Case("export-system-atom-count", lambda p, o: _export(p, o, "out.pdb", "--system", "lj13"),
         [_f("good"), "22 atoms per sample but system lj13 has 13"]),
    Case("report-binary-metrics", lambda p, o: ["report", "--metrics", str(p["good"]), "--out", str(o / "report.html")],
         [_f("good"), "not a readable JSON metrics file"]),
    # --- configs -------------------------------------------------------------------------------
    Case("train-config-json-wrong-type", lambda p, o: _train(p, o, "--config-json", '{"lr": "fast"}'),
         ["train.lr", "must be a number"]),
    Case("train-config-json-not-json", lambda p, o: _train(p, o, "--config-json", "{steps: 2"),
         ["--config-json", "not valid JSON"]),
    Case("train-config-json-unknown-setting", lambda p, o: _train(p, o, "--config-json", '{"stepz": 2}'),
         ["stepz", "unknown setting"]),
    Case("train-unknown-backbone", lambda p, o: _train(p, o, "--config-json", '{"model": {"backbone": "resnet"}}'),
         ["model.backbone", "must be one of mlp, transformer, egnn, pairnet, got 'resnet'"]),
    Case("train-bad-backbone-options",
         lambda p, o: _train(p, o, "--config-json", '{"model": {"backbone_options": {"hiddn": 4}}}'),
         ["config.model.backbone_options", "hiddn"]),
    Case("train-log-distance-basis-for-a-molecule",  # distinct atoms: each pair has its own standardisation
         lambda p, o: _train(p, o, "--config-json",
                             '{"model": {"backbone": "pairnet", "backbone_options": {"distance_rbf": 16}}}'),
         ["config.model.backbone_options", "distance_rbf", "identical particles"]),
    Case("md-config-json-wrong-type", lambda p, o: _md(p, o, "--config-json", '{"replicas": "many"}'),
         ["--config-json", "'replicas'", "must be an integer"]),
    Case("md-config-json-unknown-setting", lambda p, o: _md(p, o, "--config-json", '{"n_sample": 3}'),
         ["--config-json", "'n_sample'", "unknown setting"]),
    # --- baselines -----------------------------------------------------------------------------
    Case("baseline-budget-from-other-temperature",
         lambda p, o: _baseline(p, o, "--budget-from", str(p["ref300"])),
         [_f("ref300"), "'temperature' is 300 but 755.95 was expected"]),
    Case("baseline-budget-from-nan-set", lambda p, o: _baseline(p, o, "--budget-from", str(p["nan"])),
         [_f("nan"), "'positions' has 1 sample(s) with NaN"]),
    Case("baseline-budget-from-bad-total", lambda p, o: _baseline(p, o, "--budget-from", str(p["bad_total"])),
         [_f("bad_total"), "attribute 'n_energy_evals_total' must be an integer"]),
    Case("baseline-budget-too-small",
         lambda p, o: _baseline(p, o, "--budget-from", str(p["good"]), "--n-samples", "1000"),
         [_f("good"), "1012 energy evaluations are too few"]),
    Case("baseline-ladder-rising", lambda p, o: _baseline(p, o, "--budget", "100000",
                                                          temperatures=("300", "755.95")),
         ["--temperatures", "must decrease", "300 is followed by 755.95"]),
    Case("baseline-one-temperature", lambda p, o: _baseline(p, o, "--budget", "100000", temperatures=("755.95",)),
         ["--temperatures", "at least two temperatures"]),
    Case("baseline-zero-budget", lambda p, o: _baseline(p, o, "--budget", "0"), ["--budget", "must be in [1"]),
    Case("baseline-no-budget", lambda p, o: _baseline(p, o), ["--budget", "--budget-from", "required"]),
    Case("baseline-zero-replicas", lambda p, o: _baseline(p, o, "--budget", "100000", "--replicas-per-temperature", "0"),
         ["--replicas-per-temperature", ">= 1"]),
    Case("baseline-zero-swap-every", lambda p, o: _baseline(p, o, "--budget", "100000", "--swap-every", "0"),
         ["--swap-every", ">= 1"]),
    Case("baseline-config-json-unknown", lambda p, o: _baseline(p, o, "--budget", "100", "--config-json",
                                                               '{"swap_evry": 5}'),
         ["--config-json", "swap_evry'", "unknown setting"]),
    Case("baseline-out-is-a-folder", lambda p, o: _baseline(p, o, "--budget", "100000"),
         ["--out", "out.h5", "is a folder"], folders=["out.h5"]),
    Case("baseline-budget-plan-other-temperature",
         lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_other_temperature"])),
         [_f("plan_other_temperature"), "temperature: the plan is for 300", "target is 755.95"]),
    Case("baseline-budget-plan-other-system", lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_other_system"])),
         [_f("plan_other_system"), "system: the plan is for 'lj13'", "alanine_dipeptide"]),
    Case("baseline-budget-plan-not-a-plan", lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_not_a_plan"])),
         [_f("plan_not_a_plan"), "kind: not a budget plan"]),
    Case("baseline-budget-plan-bad-total", lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_bad_total"])),
         [_f("plan_bad_total"), "n_energy_evals_total: must be a positive integer"]),
    Case("baseline-budget-plan-other-ladder", lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_other_ladder"])),
         [_f("plan_other_ladder"), "temperatures: the plan is for the ladder [1500.0, 755.95]", "1200.0"]),
    Case("baseline-budget-plan-huge-total", lambda p, o: _baseline(p, o, "--budget-from", str(p["plan_huge_total"])),
         [_f("plan_huge_total"), "n_energy_evals_total: must be a positive integer up to"]),
    Case("baseline-budget-plan-not-json", lambda p, o: _baseline(p, o, "--budget-from", str(p["d"] / "none.json")),
         ["none.json", "not a readable budget plan"]),
    Case("budget-seed-set-other-temperature", lambda p, o: _budget(p, o, temperatures=("1200", "755.95")),
         [_f("good"), "'temperature' is 755.95 but 1200 was expected"]),
    Case("budget-anneal-json-rung-missing", lambda p, o: _budget(p, o, "--anneal-json", '{"1": {}}'),
         ["--anneal-json", "every rung 1..2", "rung(s) 2 missing"]),
    Case("budget-relax-json-unknown-setting", lambda p, o: _budget(p, o, "--relax-json", '{"n_stepz": 3}'),
         ["--relax-json", "n_stepz", "unknown setting"]),
    Case("budget-out-not-json", lambda p, o: _budget(p, o, out="out.h5"), ["--out", "out.h5", ".json"]),
    Case("budget-one-temperature", lambda p, o: _budget(p, o, temperatures=("755.95",)),
         ["--temperatures", "at least two temperatures"]),
    # --- checkpoints ---------------------------------------------------------------------------
    Case("anneal-garbage-checkpoint", lambda p, o: _anneal(p, o, ckpt="garbage_pt"),
         [_f("garbage_pt"), "not a loadable model checkpoint"]),
    Case("anneal-missing-checkpoint", lambda p, o: _anneal(p, o, ckpt=str(o / "none.pt")), ["none.pt", "file not found"]),
    Case("anneal-samples-in-other-temperature", lambda p, o: _anneal(p, o, temperature=555.52, samples_in="good"),
         [_f("good"), "'temperature' is 755.95 but the model", "trained at 1200"]),
    Case("anneal-samples-in-not-hdf5", lambda p, o: _anneal(p, o, samples_in="not_h5"),
         [_f("not_h5"), "not a readable HDF5 file"]),
    Case("anneal-checkpoint-for-other-system", lambda p, o: _anneal(p, o, system="lj13", temperature=1.0),
         [_f("ckpt"), "alanine_dipeptide", "lj13"]),
    Case("train-init-garbage", lambda p, o: _train(p, o, "--init", str(p["garbage_pt"])),
         [_f("garbage_pt"), "not a loadable model checkpoint"]),
    Case("anneal-samples-in-nan", lambda p, o: _anneal(p, o, samples_in="nan_hot"),
         [_f("nan_hot"), "'positions' has 1 sample(s) with NaN"]),
    Case("anneal-samples-in-attribute-type", lambda p, o: _anneal(p, o, samples_in="bad_total"),
         [_f("bad_total"), "attribute 'n_energy_evals_total' must be an integer", "'many'"]),
    # --- hostile inputs (one line, exit 2, nothing written) ------------------------------------
    Case("relax-positions-is-a-group", lambda p, o: _relax(p, o, "group_positions"),
         [_f("group_positions"), "'positions'", "group"]),
    Case("relax-extra-is-a-dataset", lambda p, o: _relax(p, o, "extra_dataset"), [_f("extra_dataset"), "'extra'"]),
    Case("relax-sparse-huge-set", lambda p, o: _relax(p, o, "sparse_huge"), [_f("sparse_huge"), "200000000"]),
    Case("relax-lj-set-as-aldp", lambda p, o: _relax(p, o, "lj_set"),
         [_f("lj_set"), "'system' is 'lj13'", "alanine_dipeptide"]),
    Case("anneal-samples-in-wrong-units", lambda p, o: _anneal(p, o, samples_in="wrong_units", temperature=1200 / 1.5),
         [_f("wrong_units"), "'units'", "reduced"]),
    Case("relax-aldp-checkpoint-for-lj13",
         lambda p, o: _relax(p, o, "lj_set", "--bridge", "always", "--checkpoint", str(p["ckpt"]), system="lj13"),
         [_f("ckpt"), "alanine_dipeptide", "lj13"]),
    Case("anneal-nan-weights-checkpoint", lambda p, o: _anneal(p, o, ckpt="nan_ckpt"), [_f("nan_ckpt"), "NaN"]),
    Case("anneal-abbreviated-option", lambda p, o: _anneal(p, o, "--n-particle", "100"),
         ["unrecognized arguments", "--n-particle"]),
    Case("anneal-billion-particles", lambda p, o: _anneal(p, o, "--n-particles", "1000000000"),
         ["--n-particles", "<= 1e+07"]),
    Case("anneal-float-particles", lambda p, o: _anneal(p, o, "--n-particles", "1e9"),
         ["--n-particles", "expected an integer"]),
    Case("anneal-huge-seed", lambda p, o: _anneal(p, o, "--seed", "100000000000000000000000"), ["--seed", "[0, "]),
    Case("anneal-config-json-huge-seed-like", lambda p, o: _anneal(p, o, "--config-json", '{"n_particles": 1e23}'),
         ["anneal.n_particles", "must be an integer"]),
    Case("md-system-spec-unknown-key", lambda p, o: _md(p, o, system='{"name": "lj13", "colour": "red"}'),
         ["system.colour", "unknown key"]),
    Case("train-work-dir-is-a-file", lambda p, o: _train(p, o, "--work-dir", str(p["a_file"])),
         ["--work-dir", "is a file"]),
    Case("train-config-json-options-moved", lambda p, o: _train(p, o, "--config-json", '{"options": {"lr": 1}}'),
         ["train.options", "unknown setting"]),
    Case("report-out-is-a-folder",
         lambda p, o: ["report", "--metrics", str(p["metrics"]), "--summary", str(o / "summary.csv"),
                       "--out", str(o / "report.html")],
         ["--out", "report.html", "is a folder"], folders=["report.html"]),
    Case("relax-bridge-garbage-checkpoint",
         lambda p, o: _relax(p, o, "good", "--bridge", "always", "--checkpoint", str(p["garbage_pt"])),
         [_f("garbage_pt"), "not a loadable model checkpoint"]),
]

#: outputs every case must leave absent (relative to the case's output folder)
OUTPUTS = ["out.h5", "out.json", "out.pt", "out.pdb", "out.foo", "diag.json", "losses.csv", "eval", "report.html",
           "summary.csv", ".pita-work"]


def _earlier_rung(p: dict, out_dir: Path) -> tuple[Path, bytes]:
    """The output folder already holds a valid earlier-rung file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    earlier = out_dir / "rung_0.h5"
    shutil.copyfile(p["good"], earlier)
    return earlier, earlier.read_bytes()


def _listing(folder: Path) -> list[str]:
    return sorted(str(q.relative_to(folder)) for q in folder.rglob("*"))


def _check_clean(out_dir: Path, before: list[str], earlier: Path, earlier_bytes: bytes, case: Case) -> None:
    for name in OUTPUTS:
        if name not in case.folders:
            assert not (out_dir / name).exists(), f"{case.id}: partial output {name} left behind"
    assert _listing(out_dir) == before, f"{case.id}: output folder changed: {_listing(out_dir)}"
    assert earlier.read_bytes() == earlier_bytes, f"{case.id}: the earlier rung's file was modified"


def _check_message(err: str, case: Case, p: dict) -> None:
    lines = err.splitlines()
    assert len(lines) == 1, f"{case.id}: expected one line on stderr, got:\n{err}"
    command = case.argv(p, Path("/x"))[0]
    assert lines[0].startswith(f"pita {command}: error: "), lines[0]
    for want in case.expect:
        text = want(p) if callable(want) else want
        assert text in lines[0], f"{case.id}: {text!r} not in the message: {lines[0]}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_in_process(case: Case, inp, tmp_path, capsys):
    out_dir = tmp_path / "results" / "rung_1"
    earlier, earlier_bytes = _earlier_rung(inp, out_dir)
    for folder in case.folders:
        (out_dir / folder).mkdir()
    before = _listing(out_dir)
    capsys.readouterr()
    rc = main(case.argv(inp, out_dir))
    err = capsys.readouterr().err
    assert rc == 2, f"{case.id}: exit status {rc}; stderr: {err}"
    _check_message(err, case, inp)
    _check_clean(out_dir, before, earlier, earlier_bytes, case)


SUBPROCESS_CASES = ["relax-temperature-not-the-sets", "anneal-garbage-checkpoint", "md-negative-n-samples"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_console_script(case_id: str, inp, tmp_path):
    case = next(c for c in CASES if c.id == case_id)
    exe = shutil.which("pita") or str(Path(sys.executable).with_name("pita"))
    out_dir = tmp_path / "results" / "rung_1"
    earlier, earlier_bytes = _earlier_rung(inp, out_dir)
    before = _listing(out_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([exe, *case.argv(inp, out_dir)], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2, proc.stderr
    _check_message(proc.stderr, case, inp)
    _check_clean(out_dir, before, earlier, earlier_bytes, case)


@pytest.mark.parametrize("failure", ["bad input set", "diagnostics path is a folder"])
def test_failed_rerun_keeps_the_earlier_result(failure, inp, tmp_path, capsys):
    """A failing step pointed at an existing result (a re-run) leaves that file byte-identical.

    The second failure used to come after the new set had replaced the old one (the diagnostics
    were written last): now output paths are checked before any work.
    """
    out_dir = tmp_path / "results" / "rung_1"
    out_dir.mkdir(parents=True)
    out = out_dir / "samples.h5"
    shutil.copyfile(inp["good"], out)
    (out_dir / "relax.json").mkdir()
    before_bytes, before = out.read_bytes(), _listing(out_dir)
    samples, diagnostics = (inp["nan"], out_dir / "diag.json") if failure == "bad input set" else \
        (inp["good"], out_dir / "relax.json")
    rc = main(["relax", "--samples", str(samples), "--system", "alanine_dipeptide", "--temperature", str(T_RUNG1),
               "--out", str(out), "--diagnostics", str(diagnostics), "--n-steps", "2", "--bridge", "never"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.splitlines()) == 1
    assert ("NaN" if failure == "bad input set" else "relax.json: is a folder") in err
    assert out.read_bytes() == before_bytes and _listing(out_dir) == before
    SampleSet.read(out, temperature=T_RUNG1, n_atoms=22)  # still a valid set


def test_anneal_hmc_option_reaches_the_sampler(inp, tmp_path, capsys):
    """The accepted counterpart of anneal-hmc-without-moves: --leapfrog-steps with weights ais runs, and
    the diagnostics record HMC moves (the flag is not dropped between the settings and the sampler)."""
    import json

    out_dir = tmp_path / "results" / "rung_1"
    out_dir.mkdir(parents=True)
    rc = main(_anneal(inp, out_dir, "--weights", "ais", "--mala-steps", "2", "--leapfrog-steps", "3"))
    assert rc == 0, capsys.readouterr().err
    settings = json.loads((out_dir / "diag.json").read_text())["settings"]
    assert settings["leapfrog_steps"] == 3 and settings["mala_steps"] == 2
    assert len(settings["mala_acceptance_trace"]) == 2  # one per level
