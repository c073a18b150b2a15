"""Train one rung's model on part of a seed set and measure it: fidelity on the held-out rest
(pita.fidelity) and, optionally, the final-correction ESS of FK-SMC to the next temperature.

    python bench/model_fidelity.py --seed-set seed.h5 --system alanine_dipeptide \\
        --train-json '{"steps": 2000, "model": {"backbone": "pairnet", "score_source": "energy"}}' \\
        --next-temperature 755.95 [--anneal-json '{"n_particles": 2000, "n_steps": 200, "divergence": "hutchinson"}']

Prints one JSON line (docs/RESULTS.md, "Does the model carry the result?").
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from pita import steps
from pita.fidelity import held_out_data, model_fidelity
from pita.samples import SampleSet
from pita.settings import AnnealSettings, TrainSettings, from_mapping
from pita.systems import from_argument
from pita.training import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed-set", required=True)
    p.add_argument("--system", required=True)
    p.add_argument("--train-json", default="{}")
    p.add_argument("--next-temperature", type=float, required=True)
    p.add_argument("--anneal-json", default=None)
    p.add_argument("--holdout", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=None, help="checkpoint to keep")
    p.add_argument("--init", default=None, help="warm start from this checkpoint (a later rung, as the workflow does)")
    args = p.parse_args()
    torch.set_num_threads(1)
    system = from_argument(args.system)
    ss = SampleSet.read(args.seed_set)
    cut = int((1 - args.holdout) * len(ss))
    settings = from_mapping(TrainSettings, json.loads(args.train_json), "--train-json")
    t0 = time.time()
    res = train([ss.subset(np.arange(cut))], system, config=settings, init=args.init, device="cpu", seed=args.seed,
                progress=False, out=args.out)
    report = {"train_s": time.time() - t0, "train_settings": json.loads(args.train_json), "init": args.init,
              "seed": args.seed}
    t1 = time.time()
    report["fidelity"] = model_fidelity(res.model, system, held_out_data(ss.subset(np.arange(cut, len(ss))), system,
                                                                         res.model),
                                        next_temperature=args.next_temperature, seed=args.seed)
    report["fidelity_s"] = time.time() - t1
    if args.anneal_json is not None:
        if args.out is None:
            raise SystemExit("--anneal-json needs --out (the checkpoint the anneal reads)")
        a = from_mapping(AnnealSettings, json.loads(args.anneal_json), "--anneal-json")
        t2 = time.time()
        _, diag = steps.anneal(res.model, system, args.next_temperature, a, checkpoint=args.out, samples_in=ss,
                               seed=args.seed)
        report["anneal"] = {k: diag.get(k) for k in ("ess_final_fraction", "ess_path", "n_particles_out",
                                                     "n_mirrored", "ess_reweight_previous_fraction")}
        report["anneal_s"] = time.time() - t2
    print(json.dumps(report, default=float))


if __name__ == "__main__":
    main()
