"""The Snakemake workflow end to end on the `tiny` config (real alanine dipeptide, tiny sizes).

One module-scoped run directory: the first run is killed mid-training and resumed with
--rerun-incomplete (training must continue from its checkpoint), then a second invocation must
have nothing to do, and a changed rung setting must plan only that rung and what depends on it.
The SLURM test runs the same config through the slurm profile on a one-node cluster.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    # baselines at the final rung's budget, evaluated and reported beside PITA
    budget = final.attrs["n_energy_evals_total"]
    for method in ("md", "replica_exchange"):
        base = SampleSet.read(run / "baselines" / method / "samples.h5", temperature=555.52, n_atoms=22)
        assert base.attrs["method"] == method and base.attrs["n_energy_evals_budget"] == budget
        assert budget - 3 * 8 < base.attrs["n_energy_evals"] <= budget
    import csv

    with open(run / "summary.csv") as fh:
        methods = [r["method"] for r in csv.DictReader(fh)]
    assert methods.count("pita") == 3 and {"md", "replica_exchange"} <= set(methods)
    assert "PITA and baselines at the target temperature" in (run / "report.html").read_text()


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


def test_second_invocation_has_nothing_to_do(tiny_run):
    work, args = tiny_run
    out = snakemake(work, *args, "-n")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Nothing to be done" in out.stdout + out.stderr


def test_changed_rung_setting_plans_only_that_rung_and_downstream(tiny_run):
    work, args = tiny_run
    cfg = yaml.safe_load(TINY.read_text())
    cfg["rungs"] = {"1": {"anneal": {"n_steps": cfg["anneal"]["n_steps"] + 1}}}
    changed = work / "changed.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    out = snakemake(work, "--configfile", str(changed), "--cores", "2", "-n")
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = planned_jobs(out.stdout + out.stderr)
    # rung 1 is produced by anneal(0->1): it and everything downstream reruns; nothing hotter does
    assert jobs.get("anneal") == 2 and jobs.get("relax") == 2 and jobs.get("train") == 1, jobs
    assert jobs.get("evaluate") == 2 and jobs.get("report") == 1, jobs
    assert "md_seed" not in jobs and "reference_md" not in jobs, jobs


@pytest.mark.parametrize("enabled", [True, False])
def test_tiny_plan_has_the_baselines_when_enabled(tmp_path, enabled):
    cfg = yaml.safe_load(TINY.read_text())
    cfg["baselines"]["enabled"] = enabled
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = snakemake(tmp_path, "--configfile", str(path), "--cores", "1", "-n", "-p", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = planned_jobs(out.stdout + out.stderr)
    if enabled:
        assert jobs.get("baseline") == 3 and jobs.get("evaluate_baseline") == 3, jobs
        for method in ("md", "replica_exchange", "smc"):
            assert f"results/tiny/baselines/{method}/metrics.json" in out.stdout
        assert "--budget-from results/tiny/rung_2/samples.h5" in out.stdout or "rung_2/samples.h5" in out.stdout
        # smc starts from the seed set PITA started from, with PITA's relax settings per rung
        assert "--seed-set results/tiny/rung_0/samples.h5" in out.stdout
        assert "--relax-json '{\"1\": {" in out.stdout
    else:
        assert "baseline" not in jobs and "evaluate_baseline" not in jobs, jobs
    assert jobs.get("report") == 1 and jobs.get("evaluate") == 3, jobs


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
