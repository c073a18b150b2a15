"""`pita baseline`: plain MD or replica exchange at a PITA run's energy-evaluation budget.

    pita baseline --method replica_exchange --system alanine_dipeptide \
        --temperatures 1200 755.95 555.52 300 --budget-from results/aldp/rung_3/samples.h5 \
        --n-samples 5000 --replicas 16 --swap-every 50 --out results/aldp/baselines/replica_exchange/samples.h5
            [--budget N] [--equilibration-fraction 0.2] [--timestep-fs 1.0 | --timestep DT]
            [--friction-per-ps 1.0] [--engine auto|openmm|torch] [--platform Reference|CPU|CUDA]
            [--minimize/--no-minimize] [--minimize-steps 500] [--dtype mixed|float64|float32]
            [--device cpu|cuda|auto] [--seed 0] [--progress/--no-progress] [--config-json JSON_OR_FILE]

The ladder is hot -> cold, the target temperature last (plain MD runs at the target only, with
--replicas x len(ladder) walkers: as many as replica exchange). The budget is either a number
of energy evaluations (--budget) or the `n_energy_evals_total` of a sample set at the target
temperature (--budget-from, normally the PITA run's final rung); the baseline never spends
more (pita.baselines for the accounting). --config-json takes the `baselines` section of
config.yaml (replicas_per_temperature, swap_every, n_samples, timestep_fs, timestep,
friction_per_ps, engine, equilibration_fraction, minimize); command-line options win.
"""
from __future__ import annotations

import argparse
import logging

from ..errors import PitaInputError
from .md import _load_json, _system_spec, resolve_timestep

HELP = "run a baseline (plain MD or replica exchange) within a PITA run's energy-evaluation budget"

log = logging.getLogger(__name__)

#: setting -> type, for --config-json (ALIASES map config.yaml names onto these)
SETTINGS = {
    "method": str, "system": None, "temperatures": list, "budget": int, "budget_from": str, "n_samples": int,
    "replicas": int, "swap_every": int, "equilibration_fraction": float, "timestep_fs": float, "timestep": float,
    "friction": float, "engine": str, "platform": str, "minimize": bool, "minimize_steps": int, "dtype": str,
    "device": str, "seed": int, "out": str, "progress": bool,
}
ALIASES = {"friction_per_ps": "friction", "replicas_per_temperature": "replicas"}
#: config.yaml keys of the `baselines` section that are not run settings
IGNORED = ("enabled", "methods")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=["md", "replica_exchange"], help="baseline: plain MD at the target "
                   "temperature or replica exchange (parallel tempering) across the ladder")
    p.add_argument("--system", help="system name (alanine_dipeptide, lj13, gmm, ...) or a JSON spec / spec file")
    p.add_argument("--temperatures", type=float, nargs="+",
                   help="the ladder T_0 > ... > T_K, target last (K; reduced units for LJ and toys)")
    p.add_argument("--budget", type=int, help="energy evaluations to spend at most")
    p.add_argument("--budget-from", dest="budget_from",
                   help="sample set at the target temperature whose n_energy_evals_total is the budget "
                        "(the PITA run's final rung)")
    p.add_argument("--n-samples", dest="n_samples", type=int, help="samples to write at the target temperature")
    p.add_argument("--replicas", type=int,
                   help="walkers per temperature (replica exchange); plain MD runs replicas x len(ladder) walkers")
    p.add_argument("--swap-every", dest="swap_every", type=int, help="steps between swap attempts (default 50)")
    p.add_argument("--equilibration-fraction", dest="equilibration_fraction", type=float,
                   help="share of the budget spent before the first saved frame (default 0.2)")
    p.add_argument("--timestep-fs", dest="timestep_fs", type=float, help="timestep in fs (molecules; default 1)")
    p.add_argument("--timestep", type=float,
                   help="timestep in the system's time unit (ps for molecules, reduced for LJ; default 0.005)")
    p.add_argument("--friction-per-ps", "--friction", dest="friction", type=float,
                   help="friction coefficient, 1/ps (1/reduced time for LJ); default 1")
    p.add_argument("--engine", choices=["auto", "openmm", "torch"],
                   help="MD engine of the md baseline (replica exchange always runs batched torch)")
    p.add_argument("--platform", choices=["auto", "Reference", "CPU", "CUDA", "OpenCL"], help="OpenMM platform")
    p.add_argument("--minimize", action=argparse.BooleanOptionalAction, default=None,
                   help="energy-minimise the starting structure first, counted in the budget (default: yes)")
    p.add_argument("--minimize-steps", dest="minimize_steps", type=int, help="maximum minimiser iterations (500)")
    p.add_argument("--dtype", choices=["mixed", "float64", "float32"],
                   help="torch precision (default mixed: float64 state, float32 forces)")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--out", help="output sample set (.h5), written atomically")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")
    p.add_argument("--config-json", dest="config_json",
                   help="JSON object (inline or a file) with the settings above; command-line options win")


def _check_type(key: str, value, typ) -> None:
    if value is None or typ is None:
        return
    bad = False
    if typ is bool:
        bad = not isinstance(value, bool)
    elif typ is int:
        bad = isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))
    elif typ is float:
        bad = isinstance(value, bool) or not isinstance(value, (int, float))
    elif typ is list:
        bad = not isinstance(value, (list, tuple)) or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) for v in value)
    elif typ is str:
        bad = not isinstance(value, str)
    if bad:
        kind = {bool: "true or false", int: "an integer", float: "a number", list: "a list of numbers",
                str: "a string"}[typ]
        raise PitaInputError(f"--config-json: setting {key!r} must be {kind}, got {value!r}")


def _settings(args: argparse.Namespace) -> dict:
    cfg: dict = {}
    if args.config_json:
        raw = _load_json(args.config_json, "--config-json")
        if not isinstance(raw, dict):
            raise PitaInputError("--config-json: expected a JSON object of settings")
        for key, value in raw.items():
            if key in IGNORED:
                continue
            key = ALIASES.get(key, key)
            if key not in SETTINGS:
                raise PitaInputError(f"--config-json: unknown setting {key!r}; known: {', '.join(sorted(SETTINGS))}")
            _check_type(key, value, SETTINGS[key])
            cfg[key] = value
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key in ("method", "system", "temperatures", "n_samples", "out"):
        if cfg.get(key) is None:
            raise PitaInputError(f"--{key.replace('_', '-')}: required (on the command line or in --config-json)")
    if cfg["method"] not in ("md", "replica_exchange"):
        raise PitaInputError(f"--method: unknown baseline {cfg['method']!r}; choose md or replica_exchange")
    if (cfg.get("budget") is None) == (cfg.get("budget_from") is None):
        raise PitaInputError("--budget/--budget-from: give exactly one (a number of energy evaluations, or the "
                             "sample set whose n_energy_evals_total is the budget)")
    return cfg


def run(args: argparse.Namespace) -> int:
    from .. import baselines
    from ..provenance import check_output_path
    from ..systems import load

    cfg = _settings(args)
    check_output_path(cfg["out"], "--out")
    system = load(_system_spec(cfg["system"]))
    ladder = baselines.TemperatureLadder.from_values(cfg["temperatures"], system.kB, "--temperatures")
    if cfg["method"] == "replica_exchange" and len(ladder) < 2:
        raise PitaInputError("--temperatures: replica exchange needs a ladder of at least two temperatures "
                             "(hot ... target)")
    eq = cfg.get("equilibration_fraction")
    eq = baselines.EQUILIBRATION_FRACTION if eq is None else eq
    if cfg.get("budget_from") is not None:
        budget = baselines.budget_from_samples(cfg["budget_from"], ladder.target, eq)
    else:
        b = cfg["budget"]
        budget = baselines.EvaluationBudget(int(b) if isinstance(b, float) and b.is_integer() else b, eq,
                                            source="--budget")
    timestep = resolve_timestep(args, cfg, system, "baseline")
    seed = cfg.get("seed")
    kw = dict(walkers_per_temperature=16 if cfg.get("replicas") is None else cfg["replicas"],
              timestep=timestep, friction=cfg.get("friction"),
              minimize=True if cfg.get("minimize") is None else bool(cfg["minimize"]),
              minimize_steps=500 if cfg.get("minimize_steps") is None else cfg["minimize_steps"],
              engine=cfg.get("engine") or "auto", platform=cfg.get("platform"), device=cfg.get("device"),
              dtype=cfg.get("dtype"), seed=0 if seed is None else seed, progress=cfg.get("progress"))
    if cfg["method"] == "replica_exchange":
        kw["swap_every"] = 50 if cfg.get("swap_every") is None else cfg["swap_every"]
    out = baselines.run_baseline(cfg["method"], system, list(ladder.temperatures), cfg["n_samples"], budget, **kw)
    path = out.write(cfg["out"])
    a = out.attrs
    extra = ""
    if cfg["method"] == "replica_exchange":
        extra = ", swap acceptance " + ", ".join(f"{lab}: {r:.3f}" for lab, r in zip(a["swap_pairs"], a["swap_acceptance"]))
    print(f"pita baseline: wrote {len(out)} {cfg['method']} samples of {a['system']} at {a['temperature']:g} to {path} "
          f"({a['n_energy_evals']} of {a['n_energy_evals_budget']} energy evaluations{extra})")
    return 0
