"""How the final rung's annealed set depends on how the previous rung's model was trained: retrain
that model for several step counts (optionally on a larger relaxed set), anneal the final rung
from each with several seeds, and evaluate the weighted sets as rule `evaluate_annealed` does
(docs/RESULTS.md, "What the annealed set's energy W1 measures").

    cd <the run's directory>   # where `snakemake` ran
    OMP_NUM_THREADS=1 python bench/training_curve.py --steps 250 500 1000 2000 --seeds 1 2 3 \\
        [--n-out 16000] [--train-set schedule.sigma_min=0.002] [--jobs 2] [--out results/training_curve]

The commands are the pipeline's own (read from `snakemake -n -p`): rung k-1's `pita train` with
`steps` replaced, rung k's `pita anneal` with the new checkpoint and seed 7000 + s, and its
`pita evaluate --method pita_annealed`. With --n-out, rung k-1's `pita relax` is rerun first with
that many output samples (its own seed; its energy evaluations are printed) and the model trains
on them. --train-set KEY=VALUE (a dotted key of the train section, a JSON value) changes one more
training setting. One JSON line per (steps, seed): the held-out fidelity of the model (log-weight sd at the
next temperature, energy R^2, bond RMS error of its own samples), the anneal's final ESS/N and
lineage ESS, and the annealed set's energy W1 (and its floor), torus W2 and basin free energies with their se.
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rung_seeds import SEED_OFFSET, option, pipeline_commands  # noqa: E402


def replace(argv: list[str], name: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(name) + 1] = value
    return argv


def with_config(argv: list[str], **changes) -> list[str]:
    config = json.loads(option(argv, "--config-json"))
    config.update(changes)
    return replace(argv, "--config-json", json.dumps(config))


def with_train_setting(argv: list[str], assignment: str) -> tuple[list[str], str]:
    """`schedule.sigma_min=0.002` -> the train command with that setting, and a folder tag."""
    key, _, value = assignment.partition("=")
    config = json.loads(option(argv, "--config-json"))
    *path, last = key.split(".")
    node = config
    for k in path:
        if node.get(k) is None:
            node[k] = {}
        node = node[k]
    node[last] = json.loads(value)
    tag = "".join(ch if ch.isalnum() or ch in "._=-" else "_" for ch in f"{key}={value}")
    return replace(argv, "--config-json", json.dumps(config)), f"{tag}_"


def reuse(product: Path, argv: list[str], log: Path) -> bool:
    """True when `product` exists and was made by exactly `argv` (the first line of its log); a
    product made by another command is an error, not a silent reuse."""
    if not product.exists():
        return False
    made_by = (log.read_text().splitlines() or [""])[0] if log.exists() else ""
    if made_by != shlex.join(argv):
        raise SystemExit(f"{product}: made by another command (see {log}); choose another --out")
    return True


def run(argv: list[str], log: Path, cwd: Path) -> None:
    with open(log, "w") as f:
        f.write(shlex.join(argv) + "\n")
        f.flush()
        subprocess.run(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, nargs="+", required=True, help="training steps of rung k-1's model")
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="anneal seeds (7000 + s)")
    p.add_argument("--n-out", type=int, default=None, help="rerun rung k-1's relaxation with this many samples")
    p.add_argument("--train-set", action="append", default=[], metavar="KEY=VALUE",
                   help="another train setting, e.g. schedule.sigma_min=0.002 (repeatable)")
    p.add_argument("--run-dir", default=".")
    p.add_argument("--configfile", default=None, help="the run's config file, as given to snakemake")
    p.add_argument("--out", default="results/training_curve")
    p.add_argument("--jobs", type=int, default=1, help="anneals run at a time")
    args = p.parse_args()
    run_dir = Path(args.run_dir)
    cmds = pipeline_commands(run_dir, args.configfile)
    final = max(int(option(c, "--rung")) for c in cmds if c[1] == "anneal")
    anneal = next(c for c in cmds if c[1] == "anneal" and option(c, "--rung") == str(final))
    weighted = option(anneal, "--out")
    evaluate = next(c for c in cmds if c[1] == "evaluate" and option(c, "--samples") == weighted)
    checkpoint = option(anneal, "--checkpoint")
    train = next(c for c in cmds if c[1] == "train" and option(c, "--out") == checkpoint)
    out = run_dir / args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.n_out is not None:  # a larger training set: rung k-1's relaxation with more output samples
        relax = next(c for c in cmds if c[1] == "relax" and option(c, "--out") == option(train, "--samples"))
        data = out / f"n_out{args.n_out}"
        data.mkdir(exist_ok=True)
        relaxed = data / "samples.h5"
        argv = with_config(relax, n_out=args.n_out)
        argv = replace(replace(argv, "--out", str(relaxed)), "--diagnostics", str(data / "relax_diagnostics.json"))
        if not reuse(relaxed, argv, data / "relax.log"):
            run(argv, data / "relax.log", run_dir)
        evals = json.loads((data / "relax_diagnostics.json").read_text()).get("n_energy_evals")
        print(json.dumps({"relax_n_out": args.n_out, "n_energy_evals": evals}), flush=True)
        train = replace(train, "--samples", str(relaxed))
        tag = f"n_out{args.n_out}_"
    else:
        tag = ""
    for assignment in args.train_set:
        train, more = with_train_setting(train, assignment)
        tag += more

    def train_model(steps: int) -> tuple[Path, int]:
        d = out / f"{tag}steps{steps}"
        d.mkdir(exist_ok=True)
        model = d / "model.pt"
        argv = with_config(train, steps=steps)
        for name, value in (("--out", model), ("--losses-csv", d / "losses.csv"),
                            ("--diagnostics", d / "model_fidelity.json"), ("--work-dir", d / "work")):
            argv = replace(argv, name, str(value))
        if not reuse(model, argv, d / "train.log"):
            run(argv, d / "train.log", run_dir)
        return d, steps

    def anneal_and_evaluate(d: Path, steps: int, seed: int) -> dict:
        s = d / f"seed{seed}"
        s.mkdir(exist_ok=True)
        argv = replace(anneal, "--checkpoint", str(d / "model.pt"))
        argv = replace(argv, "--seed", str(SEED_OFFSET["anneal"] + seed))
        argv = replace(replace(argv, "--out", str(s / "weighted.h5")), "--diagnostics", str(s / "diagnostics.json"))
        if not reuse(s / "weighted.h5", argv, s / "anneal.log"):
            run(argv, s / "anneal.log", run_dir)
        metrics = s / "metrics.json"
        # a metrics.json from before a metric existed (the energy W1 floor and its q90) is evaluated again
        if not metrics.exists() or "energy_w1_floor_q90" not in json.loads(metrics.read_text()):
            argv = replace(evaluate, "--samples", str(s / "weighted.h5"))
            argv = replace(replace(argv, "--out-dir", str(s)), "--metrics-out", str(metrics))
            run(argv, s / "evaluate.log", run_dir)
        fidelity = json.loads((d / "model_fidelity.json").read_text())["fidelity"]
        diag = json.loads((s / "diagnostics.json").read_text())
        m = json.loads((s / "metrics.json").read_text())
        row = {"n_out": args.n_out, "train_set": args.train_set, "steps": steps, "seed": seed,
               "log_weight_sd": fidelity["energy"]["log_weight_sd"], "r2": fidelity["energy"]["r2"],
               "bond_rms_error_pm": fidelity.get("generated", {}).get("bond_rms_error_pm"),
               "ess_final_fraction": diag["ess_final_fraction"], "lineage_ess": diag["ess_ancestors"]}
        for k in ("energy_w1", "torus_w2", "dF_alpha_R", "dF_alpha_L"):
            row[k], row[f"{k}_se"] = m.get(k), m.get(f"{k}_se")
        row["energy_w1_floor"], row["energy_w1_floor_q90"] = m["energy_w1_floor"], m["energy_w1_floor_q90"]
        return row

    dirs = [train_model(steps) for steps in args.steps]  # training first: one job each, in order
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        for row in pool.map(lambda job: anneal_and_evaluate(*job), [(d, n, s) for d, n in dirs for s in args.seeds]):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
