"""Write the workflow's commands for a config as one sequential bash script, for a machine without
Snakemake (a lent GPU machine: torch and h5py there, openmm / mdtraj / POT carried as wheels).

    bash bench/device_wheels.sh        # once: openmm, mdtraj, POT, deeptime wheels into .whl/
    python bench/device_plan.py --configfile workflow/configs/aldp-paper.yaml \\
        workflow/configs/overlays/device-check.yaml [--targets results/device-check/rung_1/metrics.json ...] \\
        [--rules md_seed train anneal relax evaluate] [--out bench/device_plan.sh]
    bash bench/device_plan.sh          # there, in the repository root; OUT=<folder> collects the figures

The commands are the pipeline's own, read from `snakemake -n -p --forceall` (its dry run lists the
jobs in an order in which each job's inputs come before it), with `pita` run as `python3 -m
pita.cli` from the checkout. --targets plans only what those files need; --rules keeps only those rules' jobs (a device check that skips the
baselines and the reference MD, say); a kept job whose input no kept job makes must find it on disk.
The script stops at the first failing command. Each job runs under `device_plan.py step`, which
times it and writes the job's Snakemake-style benchmark file (wall `s`, `cpu_time` of the job's
processes), so the report's cost table reads as after a Snakemake run; every metrics.json,
diagnostics file, log and the report go into one archive under $OUT when the script exits, also
after a failed job.
"""
from __future__ import annotations

import argparse
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

HEADER = """#!/bin/bash
# Written by bench/device_plan.py from `snakemake -n -p --forceall {args}`; do not edit, regenerate.
set -euo pipefail
export PYTHONUNBUFFERED=1
OUT=${{OUT:-results/device_plan}}; mkdir -p "$OUT"
LOG=$OUT/steps.log; : > "$LOG"
# the figures and logs come back also when a job fails: archived on any exit
archive() {{
  find {results} \\( -name metrics.json -o -name '*diagnostics.json' -o -name '*.csv' -o -name '*.tsv' \\
    -o -name '*.log' -o -name report.html \\) -print0 2>/dev/null | tar czf "$OUT/figures.tgz" --null -T - || true
  echo "figures in $OUT/figures.tgz" | tee -a "$LOG"
}}
trap archive EXIT
# wheels of the packages the machine lacks (openmm, mdtraj, POT, deeptime), carried in .whl/
# (bench/device_wheels.sh)
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:${{PYTHONPATH:-}}
fi
export PYTHONPATH=$PWD:${{PYTHONPATH:-}}
step() {{ python3 bench/device_plan.py step --log "$LOG" "$@"; }}
"""

#: the columns of a Snakemake benchmark file; what this runner does not measure is NA
BENCHMARK_COLUMNS = ("s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load",
                     "cpu_time")


def planned_jobs(snakemake_args: list[str], cwd: Path) -> list[tuple[str, str | None, str]]:
    """(rule, benchmark file, shell command) of every job of the dry run, in its order."""
    dry = subprocess.run(["snakemake", "-n", "-p", "--forceall", "--nolock", *snakemake_args], cwd=cwd,
                         capture_output=True, text=True)
    if dry.returncode != 0:
        sys.exit(f"snakemake -n failed:\n{dry.stderr.strip() or dry.stdout.strip()}")
    jobs, rule, benchmark = [], None, None
    for line in dry.stdout.splitlines():
        if line.startswith(("rule ", "localrule ")):
            rule, benchmark = line.split()[1].rstrip(":"), None
        elif line.strip().startswith("benchmark: "):
            benchmark = line.split(":", 1)[1].strip()
        elif line.startswith("Shell command: ") and line != "Shell command: None":
            jobs.append((rule, benchmark, line[len("Shell command: "):]))
    return jobs


def script_line(rule: str, benchmark: str | None, command: str) -> str:
    """The job as a timed step: `pita` as the checkout's module, the log folder made first."""
    argv = shlex.split(command)
    if argv[0] != "pita":
        raise ValueError(f"rule {rule}: not a pita command: {command[:80]}")
    made = sorted({str(Path(argv[i + 1]).parent) for i, a in enumerate(argv[:-1]) if a in (">", "2>")})
    mkdir = f"mkdir -p {' '.join(shlex.quote(d) for d in made)}; " if made else ""
    bench = f"--benchmark {shlex.quote(benchmark)} " if benchmark else ""
    return (f"{mkdir}step --rule {shlex.quote(rule)} {bench}-- "
            f"sh -c {shlex.quote('python3 -m pita.cli' + command[len('pita'):])}")


def script_text(snakemake_args: list[str], jobs: list[tuple[str, str | None, str]], results: str) -> str:
    """The whole script: header (wheels, archive on exit, the step runner), then one line per job."""
    # the arguments go into a comment: a newline in them must not start a command line
    args = shlex.join(snakemake_args).replace("\n", "\\n").replace("\r", "\\r")
    return (HEADER.format(args=args, results=shlex.quote(results))
            + "\n".join(script_line(*job) for job in jobs) + "\n")


def run_step(argv: list[str], rule: str, benchmark: str | None, log: str) -> int:
    """Run one job; write its benchmark file (atomically) and a line to the steps log."""
    start = time.perf_counter()
    rc = subprocess.run(argv).returncode
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # this runner's only child is the job
    if rc == 0 and benchmark:
        from pita.provenance import atomic_write_text

        values = {"s": f"{wall:.4f}", "h:m:s": time.strftime("%H:%M:%S", time.gmtime(wall)),
                  "cpu_time": f"{usage.ru_utime + usage.ru_stime:.2f}"}
        row = "\t".join(values.get(c, "NA") for c in BENCHMARK_COLUMNS)
        atomic_write_text(benchmark, "\t".join(BENCHMARK_COLUMNS) + "\n" + row + "\n")
    with open(log, "a") as f:
        f.write(f"{rule}\t{wall:.1f} s\trc {rc}\n")
    print(f"{rule}: {wall:.1f} s, rc {rc}", flush=True)
    return rc


def main() -> None:
    if sys.argv[1:2] == ["step"]:  # the generated script's runner: step --log L --rule R [--benchmark B] -- CMD
        p = argparse.ArgumentParser(prog="device_plan.py step")
        p.add_argument("--log", required=True)
        p.add_argument("--rule", required=True)
        p.add_argument("--benchmark", default=None)
        p.add_argument("command", nargs=argparse.REMAINDER)
        a = p.parse_args(sys.argv[2:])
        command = a.command[1:] if a.command[:1] == ["--"] else a.command
        sys.exit(run_step(command, a.rule, a.benchmark, a.log))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configfile", nargs="+", default=[], help="as snakemake's: later files override earlier")
    p.add_argument("--config", nargs="+", default=[], metavar="KEY=VALUE", help="passed to snakemake --config")
    p.add_argument("--targets", nargs="+", default=[], help="snakemake targets (files): only the jobs they need")
    p.add_argument("--rules", nargs="+", default=None, help="keep only these rules' jobs")
    p.add_argument("--results", default="results", help="the folder whose figures are archived")
    p.add_argument("--out", default="bench/device_plan.sh")
    args = p.parse_args()
    repo = Path(__file__).resolve().parent.parent
    # targets first: --configfile and --config take every word after them
    snakemake_args = args.targets + (["--configfile", *args.configfile] if args.configfile else []) + (
        ["--config", *args.config] if args.config else [])
    jobs = planned_jobs(snakemake_args, repo)
    if args.rules:
        unknown = set(args.rules) - {rule for rule, _, _ in jobs}
        if unknown:
            sys.exit(f"--rules: no job of rule(s) {', '.join(sorted(unknown))} in the plan")
        jobs = [job for job in jobs if job[0] in args.rules]
    from pita.provenance import atomic_write_text

    out = Path(args.out)
    atomic_write_text(out, script_text(snakemake_args, jobs, args.results))
    print(f"wrote {out}: {len(jobs)} jobs ({', '.join(sorted({job[0] for job in jobs}))})")


if __name__ == "__main__":
    main()
