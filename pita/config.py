"""Pipeline configuration: semantic checks beyond the JSON schema, and per-rung settings.

The schema (workflow/schemas/config.schema.yaml) checks types and fills defaults; this module
checks what a schema cannot (a decreasing ladder, a loadable system, overrides that name real
rungs and real settings) and resolves the settings of one rung of one step, so each rule's
params depend on its own rung only.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import PitaInputError

SECTIONS = ("md_seed", "reference", "train", "anneal", "relax", "evaluate")
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


def _section_schemas() -> dict[str, dict]:
    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    defs = schema["$defs"]
    return {"md_seed": defs["md"], "reference": defs["md"], "train": defs["train"], "anneal": defs["anneal"],
            "relax": defs["relax"], "evaluate": defs["evaluate"]}


def deep_merge(base: dict, override: dict) -> dict:
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


def _fail(source: str, field: str, problem: str) -> None:
    raise PitaInputError(f"{source}: field '{field}': {problem}")


def check_config(config: dict, source: str = "config.yaml") -> None:
    """Raise PitaInputError("<source>: field '<f>': <problem>") for what the schema cannot check."""
    temps = config.get("temperatures")
    if not isinstance(temps, list) or len(temps) < 2:
        _fail(source, "temperatures", "needs at least two temperatures (hot start and target)")
    for i, t in enumerate(temps):
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0:
            _fail(source, f"temperatures[{i}]", f"must be a positive number, got {t!r}")
    for i in range(1, len(temps)):
        if temps[i] == temps[i - 1]:
            _fail(source, "temperatures", f"duplicate temperature {temps[i]} at positions {i - 1} and {i}")
        if temps[i] > temps[i - 1]:
            _fail(source, "temperatures", f"must decrease from hot to cold, but {temps[i - 1]} is followed by {temps[i]}")
    _check_system(config.get("system"), source)
    n_rungs = len(temps)
    schemas = _section_schemas()
    for key, sections in (config.get("rungs") or {}).items():
        if not str(key).isdigit() or int(key) >= n_rungs:
            _fail(source, f"rungs.{key}", f"is not a rung index of the ladder (0..{n_rungs - 1})")
        for section, settings in (sections or {}).items():
            if section not in SECTIONS:
                _fail(source, f"rungs.{key}.{section}", f"unknown section; expected one of {', '.join(SECTIONS)}")
            allowed = schemas[section]["properties"]
            for name, value in (settings or {}).items():
                if name not in allowed:
                    _fail(source, f"rungs.{key}.{section}.{name}", "unknown setting")
                _check_value(source, f"rungs.{key}.{section}.{name}", value, allowed[name])
    ref_files = (config.get("reference") or {}).get("files") or {}
    for temp, path in ref_files.items():
        if not any(abs(float(temp) - float(t)) < 1e-9 for t in temps):
            _fail(source, f"reference.files.{temp}", "temperature is not on the ladder")
        if not Path(path).exists():
            _fail(source, f"reference.files.{temp}", f"file not found: {path}")


def _check_value(source: str, field: str, value: Any, schema: dict) -> None:
    kind = schema.get("type")
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "string": isinstance(value, str), "boolean": isinstance(value, bool),
          "object": isinstance(value, dict)}.get(kind, True)
    if not ok:
        _fail(source, field, f"must be of type {kind}, got {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        _fail(source, field, f"must be one of {schema['enum']}, got {value!r}")
    if "minimum" in schema and value < schema["minimum"]:
        _fail(source, field, f"must be >= {schema['minimum']}, got {value!r}")
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        _fail(source, field, f"must be > {schema['exclusiveMinimum']}, got {value!r}")
    if "maximum" in schema and value > schema["maximum"]:
        _fail(source, field, f"must be <= {schema['maximum']}, got {value!r}")


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
