"""bench/device_plan.py: the workflow's commands as one script for a machine without Snakemake."""
from __future__ import annotations

import importlib.util
import os
import shlex
import subprocess
from pathlib import Path

import pytest

from pita.cost import read_benchmark

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plan():
    spec = importlib.util.spec_from_file_location("device_plan", REPO / "bench" / "device_plan.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plan_runs_every_job_after_the_jobs_that_make_its_inputs(plan):
    """The tiny config's dry run: every pita command, each benchmark file named, and no job reads a
    file (an argument under results/) that only a later job writes."""
    jobs = plan.planned_jobs(["--configfile", "workflow/configs/tiny.yaml"], REPO)
    rules = [rule for rule, _, _ in jobs]
    assert {"md_seed", "train", "anneal", "relax", "evaluate", "report"} <= set(rules)
    assert all(bench and bench.endswith(".tsv") for rule, bench, _ in jobs if rule != "export")

    def written(cmd: str) -> set[str]:
        argv = shlex.split(cmd)
        return {a for j, a in enumerate(argv) if argv[j - 1] in ("--out", "--metrics-out") and a.startswith("results/")}

    outputs = [written(cmd) for _, _, cmd in jobs]
    assert sum(map(len, outputs)) >= len(jobs) - 2
    for i, (rule, _, cmd) in enumerate(jobs):
        argv = shlex.split(cmd)
        reads = {a for j, a in enumerate(argv) if a.startswith("results/") and argv[j - 1] in
                 ("--samples", "--samples-in", "--checkpoint", "--reference", "--seed-set", "--budget-from")}
        later = set().union(*outputs[i + 1:]) if i + 1 < len(outputs) else set()
        assert not (reads & later), f"job {i} ({rule}) reads {reads & later} before it is made"
    line = plan.script_line(*next(job for job in jobs if job[0] == "md_seed"))
    assert line.startswith("mkdir -p results/tiny/logs; step --rule md_seed --benchmark results/tiny/benchmarks/md_seed.tsv -- sh -c ")
    assert "python3 -m pita.cli md " in shlex.split(line)[-1]
    with pytest.raises(ValueError, match="not a pita command"):
        plan.script_line("x", None, "rm -rf /")


def test_step_writes_a_benchmark_file_the_report_reads(plan, tmp_path):
    bench, log = tmp_path / "b" / "train_0.tsv", tmp_path / "steps.log"
    assert plan.run_step(["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"], "train",
                         str(bench), str(log)) == 0
    measured = read_benchmark(bench)
    assert measured["s"] > 0 and measured["cpu_time"] >= 0
    failed = tmp_path / "b" / "anneal_1.tsv"
    assert plan.run_step(["sh", "-c", "exit 3"], "anneal", str(failed), str(log)) == 3
    assert not failed.exists()  # a failed job leaves no benchmark behind
    assert log.read_text().splitlines()[-1].endswith("rc 3")


def test_device_check_overlay_plans_one_gpu_scale_rung(plan):
    """The shipped device check, layered on aldp-paper.yaml: rung 0 -> 1 only (MD seed, the 755.95 K
    reference, train, anneal, relax, both evaluations), with the larger network at 6000 steps and
    10,000 particles."""
    targets = ["results/device-check/rung_1/metrics.json", "results/device-check/rung_1/annealed_metrics.json"]
    jobs = plan.planned_jobs(targets + ["--configfile", "workflow/configs/aldp-paper.yaml",
                                        "workflow/configs/overlays/device-check.yaml"], REPO)
    assert sorted(rule for rule, _, _ in jobs) == sorted(
        ["md_seed", "reference_md", "train", "anneal", "relax", "evaluate", "evaluate_annealed"])
    train = next(cmd for rule, _, cmd in jobs if rule == "train")
    anneal = next(cmd for rule, _, cmd in jobs if rule == "anneal")
    assert '"hidden": 512' in train and '"steps": 6000' in train and "--device cuda" in train
    assert '"n_particles": 10000' in anneal and "--temperature 755.95" in anneal


def test_script_stops_at_a_failed_job_and_still_archives(plan, tmp_path):
    """A generated script: a job with quotes, $() and spaces in its JSON runs as one argument; a
    failing job stops the script (no later job runs, no benchmark for it), and the archive and the
    steps log come back anyway. A newline in the header's arguments stays inside the comment."""
    marker = tmp_path / "should_not_exist"
    jobs = [("ok", "results/b/ok.tsv", "pita --version > results/logs/ok.log 2>&1"),
            ("quoted", "results/b/quoted.tsv",
             "pita budget --anneal-json '{\"a\": \"$(touch " + str(marker) + ") it''s\"}' > results/logs/q.log 2>&1"),
            ("after", "results/b/after.tsv", "pita --version > results/logs/after.log 2>&1")]
    text = plan.script_text(["--config", "x=1\ntouch " + str(marker)], jobs, "results")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "device_plan.py").write_text((REPO / "bench" / "device_plan.py").read_text())
    (tmp_path / "plan.sh").write_text(text)
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(["bash", "plan.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode != 0  # `pita budget` rejects the arguments: the script stops there
    assert not marker.exists()  # neither the header's newline nor the JSON's $() ran
    assert (tmp_path / "results" / "b" / "ok.tsv").exists()
    assert not (tmp_path / "results" / "b" / "quoted.tsv").exists()
    assert not (tmp_path / "results" / "logs" / "after.log").exists()
    assert (tmp_path / "out" / "figures.tgz").exists()
    steps = (tmp_path / "out" / "steps.log").read_text()
    assert "ok\t" in steps and "quoted\t" in steps and "after" not in steps.split("figures")[0]
