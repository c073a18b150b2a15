"""Rerun the final rung of a finished run (anneal + relax + evaluate), or the smc baseline, with
another seed: the seed spread of the 300 K figures (docs/RESULTS.md, "Seeds, lineages and honest
errors").

    cd <the run's directory>   # where `snakemake` ran
    OMP_NUM_THREADS=1 python bench/rung_seeds.py --kind pita --seed 1 [--out results/seeds]
    OMP_NUM_THREADS=1 python bench/rung_seeds.py --kind smc --seed 1
    ... --configfile workflow/configs/lj13.yaml   # a run made with --configfile

The commands are the pipeline's own (read from `snakemake -n -p`), with the seed replaced (anneal
7000 + s, relax 8000 + s, smc 9000 + s; the evaluation keeps its seed) and the outputs written
under --out/<kind><seed>/ instead of results/. Prints the metrics' headline figures as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
from pathlib import Path

SEED_OFFSET = {"anneal": 7000, "relax": 8000, "baseline": 9000}
#: options whose values are output paths, redirected into the seed's folder
OUTPUTS = ("--out", "--diagnostics", "--out-dir", "--metrics-out", "--plots-dir", "--pre-relaxation-out")


def pipeline_commands(run_dir: Path, configfile: str | None = None) -> list[list[str]]:
    """The run's `pita` commands (from its dry run, `device_plan.planned_jobs`), without their log redirection."""
    from device_plan import planned_jobs  # bench/, beside this script

    cmds = []
    for _, _, command in planned_jobs(["--configfile", configfile] if configfile else [], run_dir):
        argv = shlex.split(command)
        cmds.append(argv[:argv.index(">")] if ">" in argv else argv)
    return cmds


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kind", choices=("pita", "smc"), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--run-dir", default=".")
    p.add_argument("--configfile", default=None, help="the run's config file, as given to snakemake")
    p.add_argument("--out", default="results/seeds")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    cmds = pipeline_commands(run_dir, args.configfile)
    final = max(int(option(c, "--rung")) for c in cmds if c[1] == "anneal")
    if args.kind == "pita":
        steps = [c for c in cmds if c[1] in ("anneal", "relax") and option(c, "--rung") == str(final)]
        steps.sort(key=lambda c: c[1])  # anneal, relax
        samples = option(steps[-1], "--out")
    else:
        steps = [c for c in cmds if c[1] == "baseline" and option(c, "--method") == "smc"]
        samples = option(steps[0], "--out")
    evaluate = [c for c in cmds if c[1] == "evaluate" and option(c, "--samples") == samples]
    if len(steps) != (2 if args.kind == "pita" else 1) or len(evaluate) != 1:
        raise SystemExit(f"{run_dir}: could not find the final rung's {args.kind} commands in `snakemake -n -p`")
    out = Path(args.out) / f"{args.kind}{args.seed}"
    out.mkdir(parents=True, exist_ok=True)
    renamed: dict[str, str] = {}
    for argv in steps + evaluate:
        argv = list(argv)
        for i, a in enumerate(argv[:-1]):
            if a in OUTPUTS:
                renamed.setdefault(argv[i + 1], str(out / Path(argv[i + 1]).name))
                argv[i + 1] = renamed[argv[i + 1]]
            elif a == "--seed" and argv[1] in SEED_OFFSET:
                argv[i + 1] = str(SEED_OFFSET[argv[1]] + args.seed)
        # inputs that an earlier step of this seed wrote; no plots for a seed's evaluation
        argv = [renamed.get(a, a).replace('"plots": true', '"plots": false') for a in argv]
        if args.dry_run:
            print(shlex.join(argv))
            continue
        with open(out / f"{argv[1]}.log", "w") as log:
            subprocess.run(argv, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, check=True)
    if args.dry_run:
        return
    m = json.loads((run_dir / out / "metrics.json").read_text())
    keys = ("energy_w1", "torus_w2", "dF_alpha_R", "dF_alpha_L")
    print(json.dumps({"kind": args.kind, "seed": args.seed, **{k: m.get(k) for k in keys},
                      **{f"{k}_se": m.get(f"{k}_se") for k in keys}, "g_samples": m["bootstrap"]["g_samples"]}))


if __name__ == "__main__":
    main()
