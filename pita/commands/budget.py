"""`pita budget`: the energy evaluations a PITA run will spend, planned from its settings.

    pita budget --system alanine_dipeptide --temperatures 1200 755.95 555.52 300 \
        --seed-set results/aldp/rung_0/samples.h5 \
        --anneal-json '{"1": {...}, "2": {...}, "3": {...}}' --relax-json '{"1": {...}, ...}' \
        --out results/aldp/baselines/budget.json

The total is the rung-0 set's n_energy_evals_total plus, per rung, one true energy per annealed
particle (the final correction) and the relaxation's evaluations without the bridge (n_out x
(1 + n_steps + torsion moves)). Both are fixed by the settings, so the baselines can start with
this budget (`pita baseline --budget-from budget.json`) while PITA still runs. A rung whose
relaxation bridges (bridge auto with a tiny ESS, or always) spends more than planned; the report
compares the plan with what the run spent.
"""
from __future__ import annotations

import argparse

from . import add_system, positive_float

HELP = "plan a PITA run's energy-evaluation budget from its settings (the baselines' budget)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_system(p)
    p.add_argument("--temperatures", required=True, type=positive_float, nargs="+",
                   help="the ladder T_0 > ... > T_K, target last (K; reduced units for Lennard-Jones)")
    p.add_argument("--seed-set", dest="seed_set", required=True,
                   help="the run's rung-0 sample set at T_0 (its n_energy_evals_total starts the budget)")
    for section in ("anneal", "relax"):
        p.add_argument(f"--{section}-json", dest=f"{section}_json", metavar="JSON_OR_FILE",
                       help=f"{section} settings of every rung (one {section} section, or rung index -> {section} "
                            f"section for rungs 1..K; inline JSON or a file; default: the {section} defaults)")
    p.add_argument("--out", required=True, help="the plan (.json), written atomically")


def run(args: argparse.Namespace) -> int:
    from ..baselines import TemperatureLadder, plan_pita_budget
    from ..errors import PitaInputError
    from ..provenance import atomic_write_json, base_attrs, check_output_path
    from ..samples import SampleSet
    from ..settings import AnnealSettings, RelaxSettings, load_json_argument, to_dict
    from ..steps import rung_sections
    from ..systems import from_argument

    check_output_path(args.out, "--out")
    if not str(args.out).lower().endswith(".json"):
        raise PitaInputError(f"--out: the plan is a .json file, got {args.out!r}")
    system = from_argument(args.system)
    ladder = TemperatureLadder.from_values(args.temperatures, system.kB, "--temperatures")
    if len(ladder) < 2:
        raise PitaInputError("--temperatures: a PITA run needs a ladder of at least two temperatures (hot ... target)")
    n_rungs = len(ladder) - 1
    sections = {}
    for name, cls, text in (("anneal", AnnealSettings, args.anneal_json), ("relax", RelaxSettings, args.relax_json)):
        data = None if text is None else load_json_argument(text, f"--{name}-json")
        sections[name] = rung_sections(cls, data, n_rungs, f"--{name}-json")
    seed_set = SampleSet.read(args.seed_set, temperature=ladder.temperatures[0], load_forces=False)
    seed_set.check_system(str(args.seed_set), system)
    try:
        seed_total = int(seed_set.attrs["n_energy_evals_total"])
    except (KeyError, TypeError, ValueError):
        raise PitaInputError(f"{args.seed_set}: n_energy_evals_total: missing or not an integer") from None
    plan = plan_pita_budget(system, seed_total, sections["anneal"], sections["relax"])
    settings = {k: [to_dict(s) for s in v] for k, v in sections.items()}
    provenance = dict(step="budget", system=system.spec(), temperatures=list(ladder.temperatures),
                      settings=settings, seed_set_digest=seed_set.attrs.get("config_digest"))
    out = {"kind": "pita_budget_plan", "system": system.name, "temperature": float(ladder.target),
           "temperatures": list(ladder.temperatures), "seed_set": str(args.seed_set), **plan,
           **base_attrs("budget", provenance)}
    atomic_write_json(args.out, out)
    per_rung = ", ".join(f"{r['anneal']} + {r['relax']}" for r in plan["rungs"])
    print(f"pita budget: wrote {args.out}: {plan['n_energy_evals_total']} energy evaluations planned "
          f"(seed set {plan['n_energy_evals_seed']}; anneal + relax per rung: {per_rung})")
    return 0
