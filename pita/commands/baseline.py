"""`pita baseline`: plain MD, replica exchange or model-free SMC at a PITA run's energy-evaluation budget.

    pita baseline --method replica_exchange --system alanine_dipeptide \
        --temperatures 1200 755.95 555.52 300 --budget-from results/aldp/rung_3/samples.h5 \
        --out results/aldp/baselines/replica_exchange/samples.h5
        [--budget N] [--replicas-per-temperature R --swap-every S ... | --config-json JSON_OR_FILE]

    pita baseline --method smc --system alanine_dipeptide --temperatures 1200 755.95 555.52 300 \
        --seed-set results/aldp/rung_0/samples.h5 --budget-from results/aldp/rung_3/samples.h5 \
        --relax-json '{"1": {...}, "2": {...}, "3": {...}}' --out results/aldp/baselines/smc/samples.h5 \
        [--pre-relaxation-out results/aldp/baselines/smc/bridged.h5]

The ladder is hot -> cold, the target temperature last (plain MD runs at the target only, with
replicas_per_temperature x len(ladder) walkers: as many as replica exchange). The budget is a
number of energy evaluations (--budget), a `pita budget` plan (--budget-from budget.json: what
the PITA run's settings will spend, so the baselines can run beside it) or the
`n_energy_evals_total` of a sample set at the target temperature (--budget-from, the PITA run's
final rung: what it spent); the baseline never spends more. The settings are config.yaml's
baselines section (pita.settings.BaselineSettings).

smc starts from --seed-set (the PITA run's rung-0 MD set at T_0, whose evaluations count in the
budget) and at each rung bridges by adaptive tempering, then relaxes with that rung's relax
settings: --relax-json is one relax section (every rung) or rung index -> relax section for
every rung 1..K (the workflow passes the PITA run's, per-rung overrides resolved); without it
the relax defaults apply. The baselines section's smc_relax overrides them at every rung.
--pre-relaxation-out also writes the final rung's bridged set before its relaxation (method
smc_bridged): the no-model counterpart of PITA's annealed set (rung_K/weighted.h5).
"""
from __future__ import annotations

import argparse
import logging
import os

from . import add_device, add_progress, add_seed, add_system, integer, positive_float
from ..errors import PitaInputError
from .md import check_timestep_option

HELP = "run a baseline (plain MD, replica exchange or model-free SMC) within a PITA run's energy-evaluation budget"

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..settings import BASELINE_METHODS, BaselineSettings, add_arguments as add_settings

    p.add_argument("--method", required=True, choices=BASELINE_METHODS,
                   help="plain MD at the target temperature, replica exchange across the ladder, or smc "
                        "(adaptive-tempering resample-move SMC down the ladder from --seed-set, no model)")
    add_system(p)
    p.add_argument("--temperatures", required=True, type=positive_float, nargs="+",
                   help="the ladder T_0 > ... > T_K, target last (K; reduced units for Lennard-Jones)")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--budget", type=integer, help="energy evaluations to spend at most")
    budget.add_argument("--budget-from", dest="budget_from",
                        help="a `pita budget` plan (.json: the budget planned from the PITA run's settings) or a "
                             "sample set at the target temperature whose n_energy_evals_total is the budget")
    p.add_argument("--seed-set", dest="seed_set",
                   help="smc: the PITA run's rung-0 sample set at the first temperature (its evaluations count)")
    p.add_argument("--relax-json", dest="relax_json", metavar="JSON_OR_FILE",
                   help="smc: relax settings of every rung (one relax section, or rung index -> relax section for "
                        "rungs 1..K; inline JSON or a file; default: the relax defaults)")
    p.add_argument("--out", required=True, help="output sample set (.h5), written atomically")
    p.add_argument("--pre-relaxation-out", dest="pre_relaxation_out",
                   help="smc: also write the final rung's bridged set, before its relaxation (.h5, method "
                        "smc_bridged; the counterpart of PITA's annealed set)")
    add_device(p)
    add_seed(p)
    add_progress(p)
    add_settings(p, BaselineSettings)


def run(args: argparse.Namespace) -> int:
    from .. import baselines, steps
    from ..provenance import check_output_path
    from ..samples import SampleSet
    from ..settings import MAX_STEPS, BaselineSettings, from_arguments, load_json_argument
    from ..systems import from_argument

    settings = from_arguments(BaselineSettings, args, section="baselines")
    check_output_path(args.out, "--out")
    if args.pre_relaxation_out is not None:
        check_output_path(args.pre_relaxation_out, "--pre-relaxation-out")
        if os.path.abspath(args.pre_relaxation_out) == os.path.abspath(args.out):
            raise PitaInputError(f"--pre-relaxation-out {args.pre_relaxation_out}: the same file as --out")
    system = from_argument(args.system)
    check_timestep_option(args, system)
    ladder = baselines.TemperatureLadder.from_values(args.temperatures, system.kB, "--temperatures")
    if args.method in ("replica_exchange", "smc") and len(ladder) < 2:
        what = "replica exchange" if args.method == "replica_exchange" else "smc"
        raise PitaInputError(f"--temperatures: {what} needs a ladder of at least two temperatures (hot ... target)")
    seed_set, relax = None, None
    if args.method == "smc":
        if args.seed_set is None:
            raise PitaInputError("--seed-set: smc starts from the PITA run's rung-0 set at the first temperature; "
                                 "give it")
        relax = steps.smc_relax_settings(None if args.relax_json is None else
                                         load_json_argument(args.relax_json, "--relax-json"), len(ladder) - 1)
    else:
        for option, value in (("--seed-set", args.seed_set), ("--relax-json", args.relax_json),
                              ("--pre-relaxation-out", args.pre_relaxation_out)):
            if value is not None:
                raise PitaInputError(f"{option}: only --method smc takes it")
    eq = settings.equilibration_fraction
    if args.method == "smc":
        seed_set = SampleSet.read(args.seed_set, temperature=ladder.temperatures[0], load_forces=False)
        seed_set.check_system(str(args.seed_set), system)
    if args.budget_from is not None:
        budget = baselines.budget_from(args.budget_from, ladder.target, eq, system=system,
                                       temperatures=ladder.temperatures, seed_set=seed_set,
                                       seed_source=str(args.seed_set))
    else:
        if not 1 <= args.budget <= 1000 * MAX_STEPS:
            raise PitaInputError(f"--budget: must be in [1, {1000 * MAX_STEPS:g}], got {args.budget}")
        budget = baselines.EvaluationBudget(args.budget, eq, source="--budget")
    pre: list = [] if args.pre_relaxation_out is not None else None
    out = steps.baseline(args.method, system, list(ladder.temperatures), settings, budget, seed=args.seed,
                         device=args.device, progress=args.progress, seed_set=seed_set, relax=relax,
                         seed_source=str(args.seed_set), pre_relaxation=pre)
    if pre:
        pre_path = pre[0].write(args.pre_relaxation_out)
        print(f"pita baseline: wrote smc's final bridged set before relaxation ({len(pre[0])} samples, "
              f"{pre[0].attrs['n_energy_evals_total']} energy evaluations so far) to {pre_path}")
    path = out.write(args.out)
    a = out.attrs
    extra = ""
    if args.method == "replica_exchange":
        extra = ", swap acceptance " + ", ".join(f"{lab}: {r:.3f}" for lab, r in zip(a["swap_pairs"], a["swap_acceptance"]))
    if args.method == "smc":
        print(f"pita baseline: wrote {len(out)} smc samples of {a['system']} at {a['temperature']:g} to {path} "
              f"({a['n_energy_evals_total']} of {a['n_energy_evals_budget']} energy evaluations: seed set "
              f"{a['n_energy_evals_seed']} + smc {a['n_energy_evals']}; particles per rung {a['smc_particles']}, "
              f"bridge levels {a['smc_bridge_levels']})")
        return 0
    print(f"pita baseline: wrote {len(out)} {args.method} samples of {a['system']} at {a['temperature']:g} to {path} "
          f"({a['n_energy_evals']} of {a['n_energy_evals_budget']} energy evaluations{extra})")
    return 0
