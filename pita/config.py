"""Pipeline configuration: the whole config checked before any job, and per-rung settings.

The settings of every step are declared once, in pita.settings; this module checks a whole
config against them (one line naming the field for every problem, before any job starts) plus
what a schema cannot express (a decreasing ladder, a loadable system, overrides that name real
rungs and would apply, reference files), and resolves the settings of one rung of one step, so
each rule's params depend on its own rung only.
"""
from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

from .errors import PitaInputError
from .settings import (BASELINE_METHODS, GPU_MODEL_PATTERN, MAX_CONFIG_SEED, MAX_TEMPERATURE, RUN_NAME_PATTERN,
                       RUNG_KEY_PATTERN, RUNG_SECTIONS, SECTIONS, export_formats, from_mapping)

SYSTEM_SPEC_KEYS = ("name", "pdb", "forcefield", "length_scale")
TOP_LEVEL = ("run_name", "system", "temperatures", "device", "gpu_model", "seed", "threads", *SECTIONS, "rungs")


def deep_merge(base: dict, override: dict) -> dict:
    """`base` updated by `override`, nested mappings merged key by key (the one deep merge)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def rung_settings(config: dict, rung: int, section: str) -> dict:
    """The settings of `section` for rung `rung`: the section, then that rung's overrides."""
    base = config.get(section, {}) or {}
    override = (config.get("rungs", {}) or {}).get(str(rung), {}) or {}
    return deep_merge(base, override.get(section, {}) or {})


def resolved_settings(config: dict, rung: int, section: str, source: str = "config") -> Any:
    """The typed settings (pita.settings) of `section` at `rung`, defaults filled."""
    return from_mapping(SECTIONS[section], rung_settings(config, rung, section), source, prefix=f"{section}.")


def step_rungs(section: str, n_rungs: int) -> range:
    """The rungs at which a section's step runs (an override elsewhere would never apply)."""
    last = n_rungs - 1
    return {"md_seed": range(0, 1), "train": range(0, last), "anneal": range(1, last + 1),
            "relax": range(1, last + 1), "reference": range(0, last + 1), "evaluate": range(0, last + 1)}[section]


def _fail(source: str, field: str, problem: str) -> None:
    raise PitaInputError(f"{source}: field '{field}': {problem}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_config(config: dict, source: str = "config.yaml") -> None:
    """Raise PitaInputError("<source>: field '<f>': <problem>") for anything wrong in a pipeline config.

    Runs before the schema's validate() so that every problem is reported in one line, before any
    job starts: unknown keys at every level, types, bounds, the ladder, the system, per-rung
    overrides that name no rung or would never apply, reference files.
    """
    if not isinstance(config, dict):
        raise PitaInputError(f"{source}: a config must be a mapping of settings")
    for key in config:
        if key not in TOP_LEVEL:
            _fail(source, str(key), f"unknown setting (known: {', '.join(TOP_LEVEL)})")
    for key in ("system", "temperatures"):
        if key not in config:
            _fail(source, key, "required")
    run_name = config.get("run_name", "pita")
    if not isinstance(run_name, str) or not re.match(RUN_NAME_PATTERN, run_name):
        _fail(source, "run_name", "must be letters, digits, '_', '.' or '-', not starting with a dot "
                                  f"(outputs go to results/<run_name>/), got {run_name!r}")
    temps = config.get("temperatures")
    if not isinstance(temps, list) or len(temps) < 2:
        _fail(source, "temperatures", "needs at least two temperatures (hot start and target)")
    for i, t in enumerate(temps):
        if not _is_number(t) or not math.isfinite(t) or not 0 < t <= MAX_TEMPERATURE:
            _fail(source, f"temperatures[{i}]", f"must be a positive finite number up to {MAX_TEMPERATURE:g}, "
                                                f"got {t!r}")
    for i in range(1, len(temps)):
        if temps[i] == temps[i - 1]:
            _fail(source, "temperatures", f"duplicate temperature {temps[i]} at positions {i - 1} and {i}")
        if temps[i] > temps[i - 1]:
            _fail(source, "temperatures", f"must decrease from hot to cold, but {temps[i - 1]} is followed by {temps[i]}")
    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_CONFIG_SEED:
        _fail(source, "seed", f"must be an integer in [0, {MAX_CONFIG_SEED}], got {seed!r}")
    threads = config.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        _fail(source, "threads", f"must be an integer in [1, 1024], got {threads!r}")
    device = config.get("device", "cpu")
    if device not in ("cpu", "cuda", "auto"):
        _fail(source, "device", f"must be one of cpu, cuda, auto, got {device!r}")
    gpu_model = config.get("gpu_model")
    if gpu_model is not None and (not isinstance(gpu_model, str) or not re.match(GPU_MODEL_PATTERN, gpu_model)):
        _fail(source, "gpu_model", f"must be a GPU model name (letters, digits, '_', '.') or null, got {gpu_model!r}")
    _check_system(config.get("system"), source)
    n_rungs = len(temps)
    for section, cls in SECTIONS.items():
        from_mapping(cls, config.get(section), source, prefix=f"{section}.")
    methods = (config.get("baselines") or {}).get("methods", ["md"])
    for m in methods:
        if m not in BASELINE_METHODS:
            _fail(source, "baselines.methods", f"unknown baseline {m!r}; choose from {', '.join(BASELINE_METHODS)}")
    if not methods or len(set(methods)) != len(methods):
        _fail(source, "baselines.methods", "must name at least one baseline, each at most once")
    _check_export(config.get("export") or {}, source)
    rungs = config.get("rungs") or {}
    if not isinstance(rungs, dict):
        _fail(source, "rungs", "must be a mapping rung index -> section -> settings")
    for key, sections in rungs.items():
        if not re.match(RUNG_KEY_PATTERN, str(key)) or int(key) >= n_rungs:
            _fail(source, f"rungs.{key}", f"is not a rung index of the ladder (0..{n_rungs - 1}, written without "
                                          "leading zeros)")
        if not isinstance(sections, dict):
            _fail(source, f"rungs.{key}", "must be a mapping section -> settings")
        for section, settings in sections.items():
            if section not in RUNG_SECTIONS:
                _fail(source, f"rungs.{key}.{section}", f"unknown section; expected one of {', '.join(RUNG_SECTIONS)}")
            runs_at = step_rungs(section, n_rungs)
            if int(key) not in runs_at:
                _fail(source, f"rungs.{key}.{section}", f"would never apply: {section} runs at rungs "
                                                        f"{runs_at.start}..{runs_at.stop - 1} only")
            from_mapping(SECTIONS[section], settings, source, prefix=f"rungs.{key}.{section}.")
            resolved_settings(config, int(key), section, source)
    _check_planned_budget(config, n_rungs, source)
    for key in ("files", "cross_check"):
        ref_files = (config.get("reference") or {}).get(key) or {}
        for temp, path in ref_files.items():
            try:
                value = float(temp)
            except (TypeError, ValueError):
                _fail(source, f"reference.{key}.{temp}", "key must be a temperature of the ladder")
            if not any(abs(value - float(t)) < 1e-9 for t in temps):
                _fail(source, f"reference.{key}.{temp}", "temperature is not on the ladder")
            if not isinstance(path, str) or not Path(path).is_file():
                _fail(source, f"reference.{key}.{temp}", f"file not found: {path}")


def _check_planned_budget(config: dict, n_rungs: int, source: str) -> None:
    """A planned budget cannot know a bridge's cost: refuse it where a rung always bridges."""
    baselines = config.get("baselines") or {}
    if not baselines.get("enabled") or baselines.get("budget", "planned") != "planned":
        return
    for k in range(1, n_rungs):
        if rung_settings(config, k, "relax").get("bridge") == "always":
            _fail(source, "baselines.budget", f"planned: rung {k}'s relaxation always runs the bridge, whose cost no "
                                              "plan knows; use budget: spent (the baselines then wait for the run)")


def _check_export(export: dict, source: str) -> None:
    """export.formats: known to `pita export`, writable here (.h5 needs PyTables), each once."""
    from .commands.export import FORMATS, output_format

    formats = export.get("formats", ["dcd"])
    known = export_formats()
    for fmt in formats:
        if not isinstance(fmt, str) or fmt not in known:
            _fail(source, "export.formats", f"unknown format {fmt!r}; choose from {', '.join(known)}")
        try:
            output_format(f"x.{fmt}")
        except PitaInputError:
            _fail(source, "export.formats", f"format {fmt!r} needs the Python package {FORMATS['.' + fmt].needs!r}, "
                                            "which is not installed here")
    if not formats or len(set(formats)) != len(formats):
        _fail(source, "export.formats", "must name at least one format, each at most once")


def _check_system(system: Any, source: str) -> None:
    from .systems import ALIASES, MOLECULES, resolve_data_path

    if isinstance(system, str):
        name = ALIASES.get(system, system)
        if name in ("lj13", "lj55"):
            return
        if name not in MOLECULES:
            _fail(source, "system", f"unknown system {system!r}; known: {', '.join(sorted(MOLECULES) + ['lj13', 'lj55'])}")
        pdb = resolve_data_path(MOLECULES[name]["pdb"])
    elif isinstance(system, dict) and "pdb" in system:
        for key, value in system.items():
            if key not in SYSTEM_SPEC_KEYS:
                _fail(source, f"system.{key}", f"unknown key; a molecule spec has {', '.join(SYSTEM_SPEC_KEYS)}")
        if not isinstance(system["pdb"], str):
            _fail(source, "system.pdb", f"must be a file path, got {system['pdb']!r}")
        ff = system.get("forcefield", [])
        if not isinstance(ff, list) or not all(isinstance(f, str) for f in ff):
            _fail(source, "system.forcefield", f"must be a list of force-field file names, got {ff!r}")
        ls = system.get("length_scale", 1.0)
        if not _is_number(ls) or not math.isfinite(ls) or ls <= 0:
            _fail(source, "system.length_scale", f"must be a positive number, got {ls!r}")
        pdb = resolve_data_path(system["pdb"])
    else:
        _fail(source, "system", f"must be a system name or a mapping with 'pdb', got {system!r}")
    if not Path(pdb).exists():
        _fail(source, "system.pdb", f"PDB file not found: {pdb}")
    _check_pdb(Path(pdb), source)


def _check_pdb(path: Path, source: str) -> None:
    """A PDB must parse and hold atoms: cheap enough to run before any job starts."""
    from openmm.app import PDBFile

    try:
        pdb = PDBFile(str(path))
        n = pdb.topology.getNumAtoms()
    except Exception as exc:  # openmm raises assorted types for malformed files
        _fail(source, "system.pdb", f"{path} is not a readable PDB file ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if n == 0:
        _fail(source, "system.pdb", f"{path} contains no atoms")
