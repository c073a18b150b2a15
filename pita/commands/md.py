"""`pita md`: decorrelated MD samples (with energies and forces) at one temperature.

    pita md --system alanine_dipeptide --temperature 1200 --n-samples 1000 --out seed.h5
            [--engine auto|openmm|torch] [--replicas R] [--stride-steps S]
            [--equilibration-steps E] [--timestep-fs 1.0 | --timestep DT] [--friction 1.0]
            [--minimize/--no-minimize] [--platform Reference|CPU|CUDA] [--device cpu|cuda]
            [--seed 0] [--rung 0] [--start set.h5] [--config-json JSON_OR_FILE]

--config-json takes a JSON object (inline or a file name) with the same settings under their
option names with underscores (the md_seed / reference sections of config.yaml, e.g.
{"n_samples": 20000, "replicas": 64, "timestep_fs": 1.0, "friction_per_ps": 1.0}); options
given on the command line win over it. A `timestep` (system time units) overrides
`timestep_fs`; a config's timestep_fs is ignored for reduced-unit systems (Lennard-Jones).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..errors import PitaInputError

HELP = "run Langevin MD (OpenMM or batched torch) and write decorrelated samples with energies and forces"

log = logging.getLogger(__name__)

#: option name -> type, for --config-json (aliases map onto these)
SETTINGS = {
    "system": None, "temperature": float, "n_samples": int, "out": str, "engine": str, "replicas": int,
    "stride_steps": int, "equilibration_steps": int, "timestep_fs": float, "timestep": float,
    "friction": float, "minimize": bool, "minimize_steps": int, "platform": str, "device": str, "dtype": str,
    "seed": int, "rung": int, "start": str, "progress": bool,
}
ALIASES = {"friction_per_ps": "friction"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--system", help="system name (alanine_dipeptide, lj13, ...) or a JSON spec / spec file")
    p.add_argument("--temperature", type=float, help="temperature in K (reduced units for LJ)")
    p.add_argument("--n-samples", dest="n_samples", type=int, help="number of samples to write")
    p.add_argument("--out", help="output sample set (.h5), written atomically")
    p.add_argument("--engine", choices=["auto", "openmm", "torch"],
                   help="MD engine (default auto: torch on CUDA, OpenMM for molecules on CPU, torch otherwise)")
    p.add_argument("--replicas", type=int, help="parallel replicas (torch) or independent trajectories (openmm)")
    p.add_argument("--stride-steps", dest="stride_steps", type=int, help="steps between saved frames")
    p.add_argument("--equilibration-steps", dest="equilibration_steps", type=int,
                   help="steps before the first saved frame (per replica/trajectory)")
    p.add_argument("--timestep-fs", dest="timestep_fs", type=float, help="timestep in fs (molecules; default 1)")
    p.add_argument("--timestep", type=float,
                   help="timestep in the system's time unit (ps for molecules, reduced for LJ; default 0.005)")
    p.add_argument("--friction", type=float, help="friction coefficient, 1/ps (1/reduced time for LJ); default 1")
    p.add_argument("--minimize", action=argparse.BooleanOptionalAction, default=None,
                   help="energy-minimise the starting structure(s) first (default: yes)")
    p.add_argument("--minimize-steps", dest="minimize_steps", type=int, help="maximum minimiser iterations")
    p.add_argument("--platform", choices=["auto", "Reference", "CPU", "CUDA", "OpenCL"],
                   help="OpenMM platform (default: CUDA with --device cuda, else Reference)")
    p.add_argument("--device", help="torch device: cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument("--dtype", choices=["mixed", "float64", "float32"],
                   help="torch engine precision (default mixed: float64 state, float32 forces)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--rung", type=int, help="rung index recorded in the output (default 0)")
    p.add_argument("--start", help="sample set whose configurations start the runs (default: reference structure)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars (default: only on a terminal)")
    p.add_argument("--config-json", dest="config_json",
                   help="JSON object (inline or a file) with the settings above; command-line options win")


def _load_json(text: str, what: str):
    path = Path(text)
    src = what
    if not text.lstrip().startswith(("{", "[", '"')) and path.exists():
        src = str(path)
        text = path.read_text()
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PitaInputError(f"{src}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _settings(args: argparse.Namespace) -> dict:
    cfg: dict = {}
    if args.config_json:
        raw = _load_json(args.config_json, "--config-json")
        if not isinstance(raw, dict):
            raise PitaInputError("--config-json: expected a JSON object of settings")
        for key, value in raw.items():
            key = ALIASES.get(key, key)
            if key not in SETTINGS:
                raise PitaInputError(f"--config-json: unknown setting {key!r}; known: {', '.join(sorted(SETTINGS))}")
            typ = SETTINGS[key]
            if value is not None and typ is not None:
                if typ is bool and not isinstance(value, bool):
                    raise PitaInputError(f"--config-json: setting {key!r} must be true or false, got {value!r}")
                if typ in (int, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
                    raise PitaInputError(f"--config-json: setting {key!r} must be a number, got {value!r}")
            cfg[key] = value
    for key in SETTINGS:
        value = getattr(args, key, None)
        if value is not None:
            cfg[key] = value
    for key in ("system", "temperature", "n_samples", "out"):
        if cfg.get(key) is None:
            raise PitaInputError(f"--{key.replace('_', '-')}: required (on the command line or in --config-json)")
    return cfg


def _system_spec(value):
    if isinstance(value, dict):
        return value
    text = str(value)
    if text.lstrip().startswith("{") or text.endswith(".json"):
        spec = _load_json(text, "--system")
        if not isinstance(spec, dict):
            raise PitaInputError("--system: a JSON spec must be an object")
        return spec
    return text


def resolve_timestep(args: argparse.Namespace, cfg: dict, system, step: str) -> float | None:
    """Timestep in the system's time unit from --timestep or --timestep-fs (molecules only), or None."""
    from .. import md

    timestep = cfg.get("timestep")
    if getattr(args, "timestep_fs", None) is not None:
        if not md.is_molecular(system):
            raise PitaInputError(f"--timestep-fs: system {system.name!r} uses reduced units; give --timestep instead")
        if getattr(args, "timestep", None) is not None:
            raise PitaInputError("--timestep-fs: give either --timestep-fs or --timestep, not both")
    if timestep is None and cfg.get("timestep_fs") is not None:
        # (the config schema fills timestep_fs by default: a reduced-unit system keeps its own default)
        if md.is_molecular(system):
            tfs = cfg["timestep_fs"]
            if not isinstance(tfs, (int, float)) or not tfs > 0:
                raise PitaInputError(f"--timestep-fs: must be positive, got {tfs!r}")
            timestep = float(tfs) * 1e-3
        else:
            log.info("%s: timestep_fs ignored for reduced-unit system %s (set 'timestep' instead)", step, system.name)
    return timestep


def run(args: argparse.Namespace) -> int:
    from .. import md
    from ..provenance import check_output_path
    from ..samples import SampleSet
    from ..systems import load

    cfg = _settings(args)
    check_output_path(cfg["out"], "--out")
    system = load(_system_spec(cfg["system"]))
    timestep = resolve_timestep(args, cfg, system, "md")
    start = None
    if cfg.get("start"):
        start = SampleSet.read(cfg["start"], n_atoms=system.n_atoms)
    seed = cfg.get("seed", 0)
    seed = 0 if seed is None else seed
    out = run_md_from_settings(system, cfg, timestep, start, seed)
    path = out.write(cfg["out"])
    a = out.attrs
    print(f"pita md: wrote {len(out)} samples of {a['system']} at {a['temperature']:g} K to {path} "
          f"(engine {a['md_engine']}, {a['n_energy_evals']} energy evaluations, "
          f"mean energy {out.energy.mean():.4g} +- {out.energy.std() / max(1, len(out)) ** 0.5:.2g})")
    return 0


def run_md_from_settings(system, cfg: dict, timestep, start, seed):
    from .. import md

    return md.run_md(
        system, cfg["temperature"], cfg["n_samples"], engine=cfg.get("engine") or "auto",
        replicas=cfg.get("replicas"), stride_steps=cfg.get("stride_steps"),
        equilibration_steps=cfg.get("equilibration_steps"), timestep=timestep, friction=cfg.get("friction"),
        minimize=True if cfg.get("minimize") is None else bool(cfg["minimize"]),
        minimize_steps=cfg.get("minimize_steps"), platform=cfg.get("platform"), device=cfg.get("device"),
        dtype=cfg.get("dtype"), seed=seed, rung=0 if cfg.get("rung") is None else cfg["rung"], start=start,
        progress=cfg.get("progress"),
    )
