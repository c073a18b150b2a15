"""Pipeline configuration: the whole config checked before any job, and per-rung settings.

The settings of every step are declared once, in pita.settings; this module checks a whole
config against them (one line naming the field for every problem, before any job starts) plus
what a schema cannot express (a decreasing ladder, a loadable system, overrides that name real
rungs and would apply, reference files), and resolves the settings of one rung of one step, so
each rule's params depend on its own rung only.
"""
from __future__ import annotations

import copy
import functools
import re
from pathlib import Path
from typing import Any

from .errors import PitaInputError, brief, clip, finite_number, name_list
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


def rung_overrides(config: dict, rung: int) -> dict:
    """Rung `rung`'s overrides: its key in `rungs` written as a string ("1") or, as YAML reads an
    unquoted key, an integer (1); check_config refuses a rung given both ways."""
    rungs = config.get("rungs") or {}
    if not isinstance(rungs, dict):
        return {}
    found = [v for k, v in rungs.items() if not isinstance(k, bool) and str(k) == str(rung)]
    return (found[0] if found else None) or {}


def rung_settings(config: dict, rung: int, section: str) -> dict:
    """The settings of `section` for rung `rung`: the section, then that rung's overrides."""
    base = config.get(section, {}) or {}
    return deep_merge(base, rung_overrides(config, rung).get(section, {}) or {})


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


def _key(key: Any) -> str:
    """A mapping key as a field name: as written when printable, else its brief repr."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 60 else brief(key)


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
    if not isinstance(run_name, str) or not re.fullmatch(RUN_NAME_PATTERN, run_name):
        _fail(source, "run_name", "must be letters, digits, '_', '.' or '-', not starting with a dot "
                                  f"(outputs go to results/<run_name>/), got {brief(run_name)}")
    temps = config.get("temperatures")
    if not isinstance(temps, list) or len(temps) < 2:
        _fail(source, "temperatures", "needs at least two temperatures (hot start and target)")
    for i, t in enumerate(temps):
        if not finite_number(t) or not 0 < t <= MAX_TEMPERATURE:
            _fail(source, f"temperatures[{i}]", f"must be a positive finite number up to {MAX_TEMPERATURE:g}, "
                                                f"got {brief(t)}")
    for i in range(1, len(temps)):
        if temps[i] == temps[i - 1]:
            _fail(source, "temperatures", f"duplicate temperature {temps[i]} at positions {i - 1} and {i}")
        if temps[i] > temps[i - 1]:
            _fail(source, "temperatures", f"must decrease from hot to cold, but {temps[i - 1]} is followed by {temps[i]}")
    seed = config.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_CONFIG_SEED:
        _fail(source, "seed", f"must be an integer in [0, {MAX_CONFIG_SEED}], got {brief(seed)}")
    threads = config.get("threads", 1)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 1 <= threads <= 1024:
        _fail(source, "threads", f"must be an integer in [1, 1024], got {brief(threads)}")
    device = config.get("device", "cpu")
    if device not in ("cpu", "cuda", "auto"):
        _fail(source, "device", f"must be one of cpu, cuda, auto, got {brief(device)}")
    gpu_model = config.get("gpu_model")
    if gpu_model is not None and (not isinstance(gpu_model, str) or not re.fullmatch(GPU_MODEL_PATTERN, gpu_model)):
        _fail(source, "gpu_model", f"must be a GPU model name (letters, digits, '_', '.') or null, got {brief(gpu_model)}")
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
    rungs = {} if config.get("rungs") is None else config["rungs"]
    if not isinstance(rungs, dict):
        _fail(source, "rungs", "must be a mapping rung index -> section -> settings")
    seen: set[str] = set()
    for key, sections in rungs.items():
        if isinstance(key, bool) or not re.fullmatch(RUNG_KEY_PATTERN, str(key)) or int(key) >= n_rungs:
            _fail(source, f"rungs.{_key(key)}", f"is not a rung index of the ladder (0..{n_rungs - 1}, written "
                                                 "without leading zeros)")
        if str(key) in seen:
            _fail(source, f"rungs.{key}", "given twice (as 1 and as \"1\"): merge the two")
        seen.add(str(key))
        if not isinstance(sections, dict):
            _fail(source, f"rungs.{key}", "must be a mapping section -> settings")
        for section, settings in sections.items():
            if section not in RUNG_SECTIONS:
                _fail(source, f"rungs.{key}.{section}", f"unknown section; expected one of {', '.join(RUNG_SECTIONS)}")
            if section == "reference" and isinstance(settings, dict):
                for where in ("files", "cross_check", "basin_free_energies"):
                    if where in settings:
                        _fail(source, f"rungs.{key}.reference.{where}", f"reference sets are keyed by temperature: "
                                                                       f"give them as reference.{where} at the top level")
            runs_at = step_rungs(section, n_rungs)
            if int(key) not in runs_at:
                _fail(source, f"rungs.{key}.{section}", f"would never apply: {section} runs at rungs "
                                                        f"{runs_at.start}..{runs_at.stop - 1} only")
            from_mapping(SECTIONS[section], settings, source, prefix=f"rungs.{key}.{section}.")
            resolved_settings(config, int(key), section, source)
    _check_planned_budget(config, n_rungs, source)
    _check_warm_start(config, n_rungs, source)
    for key in ("files", "cross_check", "basin_free_energies"):
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


def _check_warm_start(config: dict, n_rungs: int, source: str) -> None:
    """A warm-started rung keeps the previous rung's architecture (pita train --init refuses a
    change): refuse an override that changes it here, before any job runs, not at rung k's training."""
    from .models import DEFAULT_OPTIONS

    arch = None
    for k in step_rungs("train", n_rungs):
        model = resolved_settings(config, k, "train", source).model
        options = model.backbone_options or dict(DEFAULT_OPTIONS.get(model.backbone, {}))
        here = {"backbone": model.backbone, "backbone_options": options, "beta_conditioning": model.beta_conditioning}
        if arch is not None and rung_settings(config, k, "train").get("warm_start", True):
            for key, value in here.items():
                if key == "backbone_options" and not model.backbone_options:
                    continue  # unset: the checkpoint's own options
                if value != arch[key]:
                    _fail(source, f"rungs.{k}.train.model.{key}", f"{brief(value)} differs from rung {k - 1}'s "
                                                                  f"{brief(arch[key])}; a warm-started rung keeps the "
                                                                  "architecture (or set train.warm_start: false)")
            continue  # the checkpoint's architecture carries on
        arch = here


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
    """The system: a known name, or a molecule spec whose PDB reads and whose force field applies
    to it (the OpenMM system is built: about a second for a small molecule, and every job needs it)."""
    from .systems import ALIASES, MOLECULES, _exists, resolve_data_path

    if isinstance(system, str):
        name = ALIASES.get(system, system)
        if name in ("lj13", "lj55"):
            return
        if name not in MOLECULES:
            _fail(source, "system", f"unknown system {brief(system)}; known: "
                                    f"{', '.join(sorted(MOLECULES) + ['lj13', 'lj55'])}")
        pdb, ff = resolve_data_path(MOLECULES[name]["pdb"]), MOLECULES[name]["forcefield"]
    elif isinstance(system, dict) and "pdb" in system:
        for key, value in system.items():
            if key not in SYSTEM_SPEC_KEYS:
                _fail(source, f"system.{_key(key)}", f"unknown key; a molecule spec has {', '.join(SYSTEM_SPEC_KEYS)}")
        if not isinstance(system["pdb"], str) or not system["pdb"].strip():
            _fail(source, "system.pdb", f"must be a file path, got {brief(system['pdb'])}")
        pdb = resolve_data_path(system["pdb"])
    else:
        _fail(source, "system", f"must be a system name or a mapping with 'pdb', got {brief(system)}")
    # the PDB first (a spec's other keys mean nothing without it), then the spec, then the force field
    path = Path(pdb)
    if not _exists(path):
        _fail(source, "system.pdb", f"PDB file not found: {clip(pdb)}")
    from .systems.molecule import read_pdb

    try:
        read_pdb(path)
    except PitaInputError as exc:
        _fail(source, "system.pdb", str(exc))
    if isinstance(system, dict):
        ff = _check_molecule_spec(system, source)
    problem = _force_field_problem(str(path), path.stat().st_mtime, tuple(ff))
    if problem is not None:
        _fail(source, "system.forcefield", problem)


def _check_molecule_spec(system: dict, source: str) -> list[str]:
    """A molecule spec's force field (returned), name and length scale."""
    if "forcefield" not in system:
        _fail(source, "system.forcefield", "required for a molecule given by its PDB (e.g. [amber14-all.xml, "
                                           "implicit/obc1.xml])")
    ff = system["forcefield"]
    if not name_list(ff):
        _fail(source, "system.forcefield", f"must be a non-empty list of force-field file names, got {brief(ff)}")
    name = system.get("name")
    if name is not None and not (isinstance(name, str) and name.strip() and name.isprintable()):
        _fail(source, "system.name", f"must be a non-empty printable string, got {brief(name)}")
    ls = system.get("length_scale", 1.0)
    if not finite_number(ls) or ls <= 0:
        _fail(source, "system.length_scale", f"must be a positive finite number, got {brief(ls)}")
    return ff


@functools.lru_cache(maxsize=16)
def _force_field_problem(path: str, mtime: float, forcefield: tuple[str, ...]) -> str | None:
    """None if the force field applies to the PDB, else the problem (cached per file version:
    building the system takes ~0.4 s and a workflow checks the same config many times)."""
    from .systems.molecule import build_openmm_system, read_pdb

    try:
        build_openmm_system(read_pdb(path), Path(path), list(forcefield))
    except PitaInputError as exc:
        return str(exc)
    return None


def check_unique_keys(paths) -> None:
    """Refuse a YAML config in which a key appears twice in one mapping (PitaInputError naming the
    file, line and key): YAML loaders keep the last one, so a second `anneal:` section would
    silently replace the first, settings and all."""
    import yaml

    class _Strict(yaml.SafeLoader):
        pass

    def mapping(loader, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: merged keys may be overridden
                continue
            key = loader.construct_object(key_node, deep=deep)
            try:
                if key in seen:
                    raise PitaInputError(f"{path}: line {key_node.start_mark.line + 1}: key {brief(key)} given twice "
                                         f"in one mapping (first on line {seen[key] + 1}); YAML would keep only the last")
                seen[key] = key_node.start_mark.line
            except TypeError:  # an unhashable key: the loader itself refuses it
                pass
        return loader.construct_mapping(node, deep=deep)

    _Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    for path in paths:
        try:
            text = Path(path).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise PitaInputError(f"{path}: cannot read the config ({exc.__class__.__name__})") from None
        try:
            yaml.load(text, Loader=_Strict)
        except yaml.YAMLError:
            # not YAML (e.g. JSON indented with tabs): Snakemake read it as JSON, so check it as JSON
            _check_unique_json_keys(path, text)


def _check_unique_json_keys(path, text: str) -> None:
    import json

    def pairs(items):
        keys = [k for k, _ in items]
        for key in keys:
            if keys.count(key) > 1:
                raise PitaInputError(f"{path}: key {brief(key)} given twice in one object; JSON readers keep only "
                                     "the last")
        return dict(items)

    try:
        json.loads(text, object_pairs_hook=pairs)
    except PitaInputError:
        raise
    except (ValueError, RecursionError):
        return  # neither YAML nor JSON to these readers: Snakemake, which loaded it, has its own say
