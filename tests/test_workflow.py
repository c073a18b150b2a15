"""The Snakemake workflow end to end on the `tiny` config (real alanine dipeptide, tiny sizes).

One module-scoped run directory: the first run is killed mid-training and resumed with
--rerun-incomplete (training must continue from its checkpoint), then a second invocation must
have nothing to do, and a changed rung setting must plan only that rung and what depends on it.
The SLURM test runs the same config through the slurm profile on a one-node cluster.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "workflow" / "configs" / "tiny.yaml"
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile")]


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def planned_jobs(output: str) -> dict[str, int]:
    """Job counts from a dry run's 'Job stats' table."""
    jobs = {}
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\n(?:total|\s*\n)", output, re.S)
    if not m:
        return jobs
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run `tiny`, kill it during rung 0's training, then finish it with --rerun-incomplete."""
    work = tmp_path_factory.mktemp("tiny")
    args = ["--configfile", str(TINY), "--cores", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*SNAKEMAKE, "--directory", str(work), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
    state_dir = work / "results" / "tiny" / ".work" / "train"
    deadline = time.time() + 600
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if list(state_dir.glob("train-*/state.pt")):
            os.killpg(proc.pid, signal.SIGKILL)  # the whole workflow dies, as on a node failure
            killed = True
            break
        time.sleep(0.2)
    proc.wait(timeout=60)
    first_output = proc.stdout.read() if proc.stdout else ""
    assert killed, f"training never wrote a resumable state before the run ended:\n{first_output[-3000:]}"
    assert not (work / "results" / "tiny" / "rung_0" / "model.pt").exists()
    # a killed Snakemake leaves its lock: release it, then finish what was incomplete
    assert snakemake(work, *args, "--unlock").returncode == 0
    second = snakemake(work, *args, "--rerun-incomplete")
    assert second.returncode == 0, second.stderr[-5000:]
    return work, args


def test_tiny_completes_after_kill_and_resumes_training(tiny_run):
    work, _ = tiny_run
    run = work / "results" / "tiny"
    for name in ("summary.csv", "report.html", "rung_0/samples.h5", "rung_0/model.pt", "rung_1/weighted.h5",
                 "rung_2/samples.h5", "rung_2/metrics.json"):
        assert (run / name).exists(), name
    log = (run / "logs" / "train_0.log").read_text()
    assert "resuming from" in log, log[-2000:]
    from pita.samples import SampleSet

    final = SampleSet.read(run / "rung_2" / "samples.h5", temperature=555.52, n_atoms=22)
    assert final.attrs["n_energy_evals_total"] > final.attrs["n_energy_evals"] > 0
    assert "report" in (run / "report.html").read_text().lower()
    # baselines at the budget planned from the run's settings (rule plan_budget), evaluated and
    # reported beside PITA; the plan is what each step spends (the final correction at most one
    # evaluation per particle, a relaxation that did not bridge exactly its steps)
    plan = json.loads((run / "baselines" / "budget.json").read_text())
    budget = plan["n_energy_evals_total"]
    seed = SampleSet.read(run / "rung_0" / "samples.h5", temperature=1200.0, n_atoms=22)
    assert plan["n_energy_evals_seed"] == seed.attrs["n_energy_evals_total"]
    assert budget == plan["n_energy_evals_seed"] + sum(r["anneal"] + r["relax"] for r in plan["rungs"])
    bridged = False
    for r in plan["rungs"]:
        weighted = SampleSet.read(run / f"rung_{r['rung']}" / "weighted.h5", n_atoms=22)
        assert 0 < weighted.attrs["n_energy_evals"] <= r["anneal"]
        diag = json.loads((run / f"rung_{r['rung']}" / "relax_diagnostics.json").read_text())
        bridged |= diag["bridge"]
        assert diag["n_energy_evals"] == r["relax"] or diag["bridge"], (diag["n_energy_evals"], r)
        # the relaxation's acceptance reaches the rung's metrics (and from there the report)
        rung_metrics = json.loads((run / f"rung_{r['rung']}" / "metrics.json").read_text())
        assert rung_metrics["relax_accept"] == pytest.approx(diag["accept_rate"])
    assert (final.attrs["n_energy_evals_total"] <= budget) or bridged
    for method in ("md", "replica_exchange"):
        base = SampleSet.read(run / "baselines" / method / "samples.h5", temperature=555.52, n_atoms=22)
        assert base.attrs["method"] == method and base.attrs["n_energy_evals_budget"] == budget
        assert budget - 3 * 8 < base.attrs["n_energy_evals"] <= budget
    # the report says when PITA spent more than its baselines were given
    assert ("Not at equal cost" in (run / "report.html").read_text()) == (final.attrs["n_energy_evals_total"] > budget)
    import csv

    with open(run / "summary.csv") as fh:
        methods = [r["method"] for r in csv.DictReader(fh)]
    assert methods.count("pita") == 3 and {"md", "replica_exchange"} <= set(methods)
    assert "PITA and baselines at the target temperature" in (run / "report.html").read_text()


@pytest.mark.filterwarnings("ignore:.*netCDF4:UserWarning")
def test_tiny_exports_the_final_rung_in_every_format(tiny_run):
    """The export rule wrote the final rung in each format of tiny.yaml (every format `pita export`
    writes but PyTables' .h5) and a PDB topology; mdtraj reads each back to the sample set's
    coordinates within the format's precision."""
    import mdtraj as md

    from pita.commands.export import FORMATS
    from pita.samples import SampleSet

    work, _ = tiny_run
    run = work / "results" / "tiny"
    formats = yaml.safe_load(TINY.read_text())["export"]["formats"]
    assert {f".{f}" for f in formats} | {".h5"} == set(FORMATS)
    final = SampleSet.read(run / "rung_2" / "samples.h5", load_forces=False)
    top = run / "export" / "rung_2.topology.pdb"
    topology = md.load(str(top))
    assert topology.n_atoms == 22 and topology.n_frames == 1
    assert [r.name for r in topology.topology.residues] == ["ACE", "ALA", "NME"]
    # PDB, xyz and mdcrd keep 3 decimals in Angstrom, .gro 3 in nm, xtc ~1e-3 nm, the rest float32
    tolerance = {"pdb": 6e-5, "pdb.gz": 6e-5, "xyz": 6e-5, "mdcrd": 6e-5, "crd": 6e-5, "gro": 6e-4, "xtc": 6e-4}
    for fmt in formats:
        path = run / "export" / f"rung_2.{fmt}"
        t = md.load(str(path)) if FORMATS[f".{fmt}"].has_topology else md.load(str(path), top=str(top))
        assert t.n_frames == len(final) and t.n_atoms == 22, fmt
        err = float(np.abs(t.xyz - final.positions).max())
        assert err <= tolerance.get(fmt, 1e-6), (fmt, err)
    # only the final rung by default
    assert sorted(p.name for p in (run / "export").iterdir() if p.name.startswith("rung_")) == \
        sorted([f"rung_2.{f}" for f in formats] + ["rung_2.topology.pdb"])


def test_report_zip_has_every_declared_plot_and_the_cost_table(tiny_run):
    """`snakemake --report report.zip` on the finished tiny run: every plot the rules declare with
    report() is in it, and the cost table sums the benchmarks per method."""
    import csv
    import json
    import zipfile

    work, args = tiny_run
    run = work / "results" / "tiny"
    out = snakemake(work, *args, "--report", "report.zip", timeout=600)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    with zipfile.ZipFile(work / "report.zip") as z:  # report/data/raw/<hash>/<file name>
        packed = {}
        for name in z.namelist():
            packed.setdefault(name.rsplit("/", 1)[-1], []).append(z.read(name))
    declared = [run / "figures" / n for n in ("ess_traces.png", "losses.png", "accuracy_vs_cost.png")]
    declared += [run / n for n in ("summary.csv", "report.html", "cost.csv")]
    for k in range(3):
        declared += sorted((run / f"rung_{k}" / "plots").glob("*.png"))
    for method in ("md", "replica_exchange", "smc"):
        declared += sorted((run / "baselines" / method / "plots").glob("*.png"))
    plots = {p.name for p in declared}
    assert {"energy.png", "distances.png", "ramachandran.png", "free_energy_profiles.png"} <= plots
    for path in declared:
        assert path.read_bytes() in packed.get(path.name, []), f"{path.relative_to(work)} not in the report"
    # cost per method: the benchmarks summed, PITA's evaluations its final rung's total
    with open(run / "cost.csv") as fh:
        cost = {r["method"]: r for r in csv.DictReader(fh)}
    assert list(cost) == ["pita", "md", "replica_exchange", "smc", "evaluation"]
    assert int(cost["pita"]["jobs"]) == 1 + 2 + 2 + 2 and int(cost["smc"]["jobs"]) == 2
    bench = run / "benchmarks"

    def wall(name):
        with open(bench / f"{name}.tsv") as fh:
            return float(next(csv.DictReader(fh, delimiter="\t"))["s"])

    pita_wall = sum(wall(n) for n in ("md_seed", "train_0", "train_1", "anneal_1", "anneal_2", "relax_1", "relax_2"))
    assert float(cost["pita"]["wall_time_s"]) == pytest.approx(pita_wall, rel=1e-9)
    assert float(cost["md"]["wall_time_s"]) == pytest.approx(wall("baseline_md"), rel=1e-9)
    assert float(cost["smc"]["wall_time_s"]) == pytest.approx(wall("baseline_smc") + wall("md_seed"), rel=1e-9)
    final = json.loads((run / "rung_2" / "metrics.json").read_text())
    assert int(cost["pita"]["n_energy_evals_total"]) == final["n_energy_evals_total"]
    assert float(cost["pita"]["cpu_hours"]) > 0 and float(cost["pita"]["gpu_hours"]) == 0  # device: cpu
    # every metric carries its bootstrap se
    for key in ("energy_w1", "energy_w2", "torus_w2", "rama_kl", "distance_w2"):
        assert isinstance(final.get(f"{key}_se"), float) and final[f"{key}_se"] > 0, key
    for basin in ("C7eq", "alpha_R", "alpha_L"):  # a population of 0 or 1 has no spread to resample
        p, se = final[f"p_{basin}"], final[f"p_{basin}_se"]
        assert se >= 0 and (se > 0) == (0 < p < 1), (basin, p, se)
    assert "dF_alpha_R_se" in final
    assert final["tica_w2"] is None and "tica_w2_se" not in final  # too few frames for TICA at this size
    page = (run / "report.html").read_text()
    assert "Cost per method" in page and "±" in page
    # each anneal's weighted set is evaluated too, before relaxation (rule evaluate_annealed)
    for k in (1, 2):
        annealed = json.loads((run / f"rung_{k}" / "annealed_metrics.json").read_text())
        relaxed = json.loads((run / f"rung_{k}" / "metrics.json").read_text())
        assert annealed["method"] == "pita_annealed" and annealed["rung"] == k and annealed["weighted"] is True
        assert annealed["n_energy_evals_total"] < relaxed["n_energy_evals_total"]
        assert annealed["temperature"] == relaxed["temperature"] and "plots" not in annealed
    assert "Before and after relaxation" in page and "<td>pita_annealed</td>" in page
    # smc's final bridged set, before its relaxation, evaluated against the same reference
    bridged = json.loads((run / "baselines" / "smc" / "bridged_metrics.json").read_text())
    smc = json.loads((run / "baselines" / "smc" / "metrics.json").read_text())
    assert bridged["method"] == "smc_bridged" and bridged["temperature"] == smc["temperature"] == final["temperature"]
    assert bridged["n_energy_evals_total"] < smc["n_energy_evals_total"] and "plots" not in bridged
    start = page.index("<h2>Before and after relaxation</h2>")
    table = page[start:page.index("</table>", start)]
    assert table.index("<td>pita_annealed</td>") < table.index("<td>smc_bridged</td>") < table.index("<td>smc</td>")


def test_second_invocation_has_nothing_to_do(tiny_run):
    work, args = tiny_run
    out = snakemake(work, *args, "-n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Nothing to be done" in out.stdout + out.stderr


@pytest.mark.parametrize("key", ["1", 1], ids=["quoted", "integer"])
def test_changed_rung_setting_plans_only_that_rung_and_downstream(tiny_run, key):
    """The same plan whether the rung is written "1" or, as YAML reads an unquoted key, 1 (an
    integer key used to be accepted and ignored)."""
    work, args = tiny_run
    cfg = yaml.safe_load(TINY.read_text())
    cfg["rungs"] = {key: {"anneal": {"n_steps": cfg["anneal"]["n_steps"] + 1}}}
    changed = work / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    out = snakemake(work, "--configfile", str(changed), "--cores", "2", "-n")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = planned_jobs(out.stdout + out.stderr)
    # rung 1 is produced by anneal(0->1): it and everything downstream reruns; nothing hotter does
    assert jobs.get("anneal") == 2 and jobs.get("relax") == 2 and jobs.get("train") == 1, jobs
    assert jobs.get("evaluate") == 2 and jobs.get("evaluate_annealed") == 2 and jobs.get("report") == 1, jobs
    assert "md_seed" not in jobs and "reference_md" not in jobs, jobs
    # the baselines' planned budget does not depend on the anneal's n_steps: they stay as they are
    assert not {"plan_budget", "baseline", "baseline_smc", "evaluate_baseline", "evaluate_smc_bridged"} & set(jobs), jobs


@pytest.mark.parametrize("enabled,budget", [(True, "planned"), (True, "spent"), (False, "planned")])
def test_tiny_plan_has_the_baselines_when_enabled(tmp_path, enabled, budget):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["baselines"].update(enabled=enabled, budget=budget)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", str(path), "--cores", "1", "-n", "-p", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = planned_jobs(out.stdout + out.stderr)
    if enabled:
        assert jobs.get("baseline") == 2 and jobs.get("baseline_smc") == 1 and jobs.get("evaluate_baseline") == 3, jobs
        # smc's final bridged set, before its relaxation, is evaluated too (beside PITA's annealed set)
        assert jobs.get("evaluate_smc_bridged") == 1, jobs
        assert "--pre-relaxation-out results/tiny/baselines/smc/bridged.h5" in out.stdout
        for method in ("md", "replica_exchange", "smc"):
            assert f"results/tiny/baselines/{method}/metrics.json" in out.stdout
        # planned: the budget comes from the run's settings (and the rung-0 set), so the baselines
        # need no rung after 0 and run beside PITA; spent: they wait for the final rung's total
        budget_file = "results/tiny/baselines/budget.json" if budget == "planned" else "results/tiny/rung_2/samples.h5"
        assert f"--budget-from {budget_file}" in out.stdout
        assert jobs.get("plan_budget") == (1 if budget == "planned" else None), jobs
        # smc starts from the seed set PITA started from, with PITA's relax settings per rung
        assert "--seed-set results/tiny/rung_0/samples.h5" in out.stdout
        assert "--relax-json '{\"1\": {" in out.stdout
    else:
        assert not {"baseline", "baseline_smc", "evaluate_baseline", "evaluate_smc_bridged", "plan_budget"} & set(jobs), jobs
    assert jobs.get("report") == 1 and jobs.get("evaluate") == 3 and jobs.get("evaluate_annealed") == 2, jobs


def test_basin_reference_reaches_every_evaluation_at_its_temperature(tmp_path):
    """reference.basin_free_energies at the final T: the rung's evaluations (relaxed and annealed)
    and the baselines' get --basin-reference; the rungs at other temperatures do not."""
    cfg = yaml.safe_load(TINY.read_text())
    cfg["baselines"].update(enabled=True, budget="planned")
    basins = tmp_path / "basins 555.json"  # a space: the path reaches the shell quoted
    basins.write_text("{}")
    cfg.setdefault("reference", {})["basin_free_energies"] = {555.52: str(basins)}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", str(path), "--cores", "1", "-n", "-p", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    commands = [c for c in out.stdout.split("\n\n") if "pita evaluate" in c]
    flagged = [c for c in commands if f"--basin-reference {shlex.quote(str(basins))}" in c]
    # rung 2 relaxed + annealed, three baselines, smc's bridged set; not rungs 0 and 1
    assert len(flagged) == 6, (len(commands), len(flagged))
    assert not [c for c in flagged if re.search(r"--samples \S*rung_[01]/", c)]
    # a missing file is refused before any job, naming the key
    cfg["reference"]["basin_free_energies"] = {555.52: str(tmp_path / "missing.json")}
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", str(path), "--cores", "1", "-n", timeout=300)
    assert out.returncode != 0 and "reference.basin_free_energies.555.52" in out.stdout + out.stderr


def test_lint_is_clean():
    out = subprocess.run([*SNAKEMAKE, "--lint", "--configfile", str(TINY)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0 and "good condition" in out.stdout + out.stderr, out.stdout + out.stderr


@pytest.mark.parametrize("patch,fragment", [
    ({"temperatures": [555.52, 1200.0]}, "field 'temperatures': must decrease"),
    ({"system": "caffeine"}, "field 'system': unknown system 'caffeine'"),
    ({"anneal": {"n_particles": -4}}, "n_particles"),
    # typos and hostile values are refused in one line naming the key, before any job
    ({"relax": {"n_stepz": 500}}, "field 'relax.n_stepz': unknown setting"),
    ({"anneal": {"n_particle": 100}}, "field 'anneal.n_particle': unknown setting"),
    ({"rungs": {"01": {"relax": {"n_steps": 3}}}}, "field 'rungs.01': is not a rung index"),
    ({"rungs": {"0": {"anneal": {"n_steps": 3}}}}, "field 'rungs.0.anneal': would never apply"),
    ({"run_name": ".."}, "field 'run_name'"),
    ({"temperatures": [float("inf"), 755.95, 555.52]}, "field 'temperatures[0]'"),
    ({"train": {"options": {"lr": 0.1}}}, "field 'train.options': unknown setting"),
    ({"md_seed": {"platform": "Reference'$(touch PWNED)'"}}, "field 'md_seed.platform': must be one of"),
])
def test_bad_config_fails_before_any_job(tmp_path, patch, fragment):
    cfg = yaml.safe_load(TINY.read_text())
    cfg.update(patch)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", str(bad), "--cores", "1")
    assert out.returncode != 0
    text = out.stdout + out.stderr
    assert fragment in text
    assert sum(fragment in line for line in text.splitlines()) == 1  # the whole message on one line
    assert not (tmp_path / "results").exists() and not list(tmp_path.glob("PWNED*"))


@pytest.mark.parametrize("extra, fragment", [
    # a second section replaces the first wholesale in YAML: refused, naming the line and key
    ("anneal:\n  n_particles: 64\n", "key 'anneal' given twice in one mapping"),
    ("rungs:\n  \"1\": {}\n  1: {}\n", "field 'rungs.1': given twice"),
    ("gpu_model: \"a100\\n\"\n", "field 'gpu_model'"),
])
def test_config_file_with_a_key_twice_fails_before_any_job(tmp_path, extra, fragment):
    text = TINY.read_text()
    if extra.startswith("rungs"):
        assert "\nrungs:" not in text  # tiny.yaml has no rungs section of its own
    bad = tmp_path / "bad.yaml"
    bad.write_text(text + extra)
    out = snakemake(tmp_path, "--configfile", str(bad), "--cores", "1", "-n")
    text = out.stdout + out.stderr
    assert out.returncode != 0 and sum(fragment in line for line in text.splitlines()) == 1, text[-2000:]
    assert not (tmp_path / "results").exists()


def _slurm_available() -> str | None:
    if shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0:
        return None
    if os.geteuid() != 0:
        return "needs root to start a local SLURM cluster"
    if not shutil.which("apt-get") and not shutil.which("slurmctld"):
        return "no apt-get to install slurm-wlm"
    return None


def test_tiny_through_real_slurm(tmp_path):
    reason = _slurm_available()
    if reason and not os.environ.get("CI"):
        pytest.skip(reason)
    start = subprocess.run(["bash", str(ROOT / "tests" / "slurm" / "start_cluster.sh")], capture_output=True,
                           text=True, timeout=900)
    assert start.returncode == 0, start.stdout + start.stderr
    before = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout.split()
    # one annealing rung keeps CI short; one CPU per job lets two jobs share the 2-core node
    cfg = yaml.safe_load(TINY.read_text())
    cfg["temperatures"] = cfg["temperatures"][:2]
    # with one rung the planned budget pays smc too little beyond the seed set; the budget the run
    # spent (its bridge included) does, and takes the other path through the DAG (baselines wait)
    cfg["baselines"]["budget"] = "spent"
    (tmp_path / "tiny_slurm.yaml").write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--profile", str(ROOT / "workflow" / "profiles" / "slurm"),
                    "--configfile", str(tmp_path / "tiny_slurm.yaml"), "--slurm-no-account",
                    "--slurm-status-command", "squeue", "--jobs", "4",
                    "--default-resources", "slurm_partition=debug", "runtime=30", "mem_mb=2000", "cpus_per_task=1",
                    timeout=1500)
    assert out.returncode == 0, (out.stdout + out.stderr)[-5000:]
    assert (tmp_path / "results" / "tiny" / "report.html").exists()
    # every job went through sbatch: SLURM's queue (kept by MinJobAge) lists them
    after = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %j"], capture_output=True, text=True).stdout
    new = [line for line in after.splitlines() if line.split()[0] not in before]
    # md_seed, 2 x reference_md, train, anneal, relax, 2 x evaluate, report
    assert len(new) >= 9, after


# ------------------------------------------------------------------------ GPU-scale plan via SLURM
PAPER = ROOT / "workflow" / "configs" / "aldp-paper.yaml"
SLURM_PROFILE = ROOT / "workflow" / "profiles" / "slurm"
#: the slurm profile promises that every job of the shipped configs fits a 12 h partition
PARTITION_LIMIT_MIN = 12 * 60
#: rules whose jobs run on the GPU under device: cuda (md_seed, reference_md and baseline: unless
#: configured otherwise, see the third case below) and those that never do
GPU_RULES = {"md_seed", "reference_md", "train", "anneal", "relax", "baseline", "baseline_smc"}
CPU_RULES = {"evaluate", "evaluate_annealed", "evaluate_baseline", "evaluate_smc_bridged", "report", "export",
             "plan_budget"}


def dry_run_jobs(output: str) -> list[dict]:
    """Each job a dry run prints: rule, threads (1 when not shown), resources, shell command."""
    jobs: list[dict] = []
    for line in output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            jobs.append({"rule": m.group(1), "threads": 1, "resources": {}, "shell": "", "benchmark": None})
        elif jobs and line.startswith("    benchmark: "):
            jobs[-1]["benchmark"] = Path(line.split(":", 1)[1].strip()).stem
        elif jobs and line.startswith("    threads: "):
            jobs[-1]["threads"] = int(line.split(":", 1)[1])
        elif jobs and line.startswith("    resources: "):
            for item in line.split(":", 1)[1].strip().split(", "):
                key, _, value = item.partition("=")
                jobs[-1]["resources"][key] = int(value) if value.isdigit() else value
        elif jobs and line.startswith("Shell command: "):
            jobs[-1]["shell"] = line[len("Shell command: "):]
    return [j for j in jobs if j["rule"] != "all"]


class _Resources(dict):
    """job.resources as the slurm executor plugin reads it (mapping and attributes)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def sbatch_call(job: dict) -> str | None:
    """The sbatch command line snakemake-executor-plugin-slurm would build for a planned job
    (None where the plugin's submit-string helpers are not importable)."""
    try:
        from types import SimpleNamespace

        from snakemake_executor_plugin_slurm.submit_string import get_submit_command
        from snakemake_executor_plugin_slurm.utils import set_gres_string
    except ImportError:
        return None
    fake = SimpleNamespace(resources=_Resources(job["resources"]), threads=job["threads"], name=job["rule"],
                           is_group=lambda: False)
    params = {"run_uuid": "x", "slurm_logfile": "x.log", "comment_str": job["rule"], "account": "",
              "partition": "-p gpu", "workdir": "."}
    return get_submit_command(fake, params) + set_gres_string(fake)


@pytest.mark.parametrize("case", ["shipped", "gpu_model", "cpu_md"])
def test_gpu_scale_config_through_the_slurm_profile_asks_for_what_each_job_uses(tmp_path, case):
    """aldp-paper.yaml through workflow/profiles/slurm, planned by a dry run (nothing submitted: a
    fake sbatch would leave a mark; the plugin may query scontrol, which fails here): every job that runs on the GPU asks for exactly one and gets
    --device cuda, every other none and no cuda; cpus_per_task is the job's threads; runtime fits
    the partition; mem_mb is set. `gpu_model`: the profile's GPU model reaches GPU jobs only.
    `cpu_md`: a configured reference set and OpenMM on the CPU platform need no GPU."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    mark = tmp_path / "SUBMITTED"
    for tool in ("sbatch", "srun", "scancel", "squeue", "sacct", "sinfo", "scontrol", "sacctmgr"):
        log = mark if tool in ("sbatch", "srun", "scancel") else tmp_path / "queried"
        (fake_bin / tool).write_text(f"#!/bin/sh\necho {tool} >> '{log}'\nexit 1\n")
        (fake_bin / tool).chmod(0o755)
    cfg = yaml.safe_load(PAPER.read_text())
    # the config's data paths are relative to the repository; this run's working directory is tmp_path
    for temp, path in (cfg["reference"].get("basin_free_energies") or {}).items():
        cfg["reference"]["basin_free_energies"][temp] = str(ROOT / path)
    extra: list[str] = []
    if case == "gpu_model":
        extra = ["--config", "gpu_model=a100"]
    if case == "cpu_md":
        cfg["reference"]["files"] = {"300.0": str(ROOT / "data" / "reference" / "aldp_300K.h5")}
        cfg["baselines"].update(engine="openmm", platform="CPU")
    config = tmp_path / "paper.yaml"
    config.write_text(yaml.safe_dump(cfg))
    # --cores only lifts the dry run's default of one core, which would cap every job's threads at 1
    # (a real cluster run has no such cap); the profile is the shipped one
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}"}
    out = subprocess.run([*SNAKEMAKE, "--directory", str(tmp_path), "--profile", str(SLURM_PROFILE),
                          "--configfile", str(config), "--cores", "1024", "-n", *extra],
                         capture_output=True, text=True, timeout=300, env=env)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert not mark.exists(), f"a dry run called {mark.read_text()}"
    jobs = dry_run_jobs(out.stdout)
    counts = {r: sum(j["rule"] == r for j in jobs) for r in GPU_RULES | CPU_RULES}
    assert counts == {"md_seed": 1, "reference_md": 4, "train": 3, "anneal": 3, "relax": 3, "baseline": 2,
                      "baseline_smc": 1, "evaluate": 4, "evaluate_annealed": 3, "evaluate_baseline": 3,
                      "evaluate_smc_bridged": 1, "report": 1, "export": 1, "plan_budget": 1}, counts
    for job in jobs:
        rule, res, shell = job["rule"], job["resources"], job["shell"]
        what = f"{rule} {res} {shell[:200]}"
        cpu_only = rule in CPU_RULES or (case == "cpu_md" and (
            (rule == "reference_md" and "--given" in shell) or (rule == "baseline" and "--method md " in shell)))
        if cpu_only:
            assert res.get("gpu", 0) == 0 and "gpu_model" not in res and "gres" not in res, what
            assert "--device cuda" not in shell, what
        else:
            assert res.get("gpu") == 1 and "gres" not in res, what
            assert "--device cuda" in shell, what
        assert ("--device cuda" in shell) == (res.get("gpu") == 1), what
        assert res.get("gpu_model") == ("a100" if case == "gpu_model" and not cpu_only else None), what
        assert res.get("cpus_per_task") == job["threads"], what
        assert job["threads"] == (1 if rule in CPU_RULES else cfg["threads"]), what
        assert isinstance(res.get("runtime"), int) and 1 <= res["runtime"] <= PARTITION_LIMIT_MIN, what
        assert isinstance(res.get("mem_mb"), int) and res["mem_mb"] >= 1000, what
        call = sbatch_call(job)
        if call is not None:  # what the plugin would submit for it
            gpus = re.findall(r"--gpus=(\S+)", call)
            assert gpus == ([] if cpu_only else ["a100:1" if case == "gpu_model" else "1"]), (what, call)
            assert f"--cpus-per-task={job['threads']}" in call and f"-t {res['runtime']}" in call, call
            assert f"--mem {res['mem_mb']}" in call, call
    # the cost table's GPU hours: exactly the jobs that asked for one
    report_shell = next(j["shell"] for j in jobs if j["rule"] == "report")
    listed = shlex.split(report_shell.split("--gpu-jobs", 1)[1].split(" --", 1)[0])
    expected = {j["benchmark"] for j in jobs if j["resources"].get("gpu") == 1}
    assert "md_seed" in expected and sorted(listed) == sorted(expected), (listed, expected)
    if case == "cpu_md":
        assert "baseline_md" not in listed and "reference_md_3" not in listed and "reference_md_0" in listed
        assert sum(j["rule"] == "reference_md" and j["resources"].get("gpu") == 0 for j in jobs) == 1
        assert sum(j["rule"] == "baseline" and j["resources"].get("gpu") == 0 for j in jobs) == 1


@pytest.mark.parametrize("config", sorted((ROOT / "workflow" / "configs").glob("*.yaml")) + [ROOT / "config.yaml"],
                         ids=lambda p: p.name)
def test_shipped_configs_fit_the_partition_the_profile_promises(config):
    from pita.settings import ResourceSettings, from_mapping, to_dict

    res = from_mapping(ResourceSettings, yaml.safe_load(config.read_text()).get("resources"), str(config),
                       prefix="resources.")
    assert all(1 <= r["runtime"] <= PARTITION_LIMIT_MIN and r["mem_mb"] >= 1000 for r in to_dict(res).values())
